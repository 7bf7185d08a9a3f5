"""Drift and live performance against the training reference."""

"""Unit tests that need nothing but Python."""

"""Tests of the fakes the integration tests stand on."""

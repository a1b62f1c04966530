"""Fixtures for a real smtp server on loopback (filled in by its owner)."""

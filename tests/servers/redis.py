"""Fixtures for a real redis server on loopback (filled in by its owner)."""

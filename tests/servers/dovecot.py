"""Fixtures for a real dovecot server on loopback (filled in by its owner)."""

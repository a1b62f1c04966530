"""Shared fixtures. Real servers (redis-server, aiosmtpd, Dovecot) live in tests/servers/."""

pytest_plugins = ["tests.servers.smtp", "tests.servers.dovecot", "tests.servers.redis"]

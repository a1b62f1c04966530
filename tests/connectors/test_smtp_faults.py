"""SMTP faults against real servers on loopback: what is retried, what never is, and the clock.

The rule under test (connectors/smtp/retry.py): a transaction that failed before the server could
have accepted the message (a 4xx, a connection dropped before the final "." was sent) is retried
on a fresh connection with backoff, within the request's timeout; a 5xx is not; and once the
final "." has been sent nothing is ever sent again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from connectors.smtp.retry import RetryPolicy
from runtime.errors import ConnectFailed, FlintError, RemoteRefused, TimedOut, TransientFailure
from tests.servers.raw_smtp import RawBehaviour, RawSmtpServers
from tests.servers.smtp import RecordingHandler, SmtpServers, send

MAIL = {"from": "ops@example.org", "to": "a@example.org", "subject": "faults", "body": "hello"}
FAST = {"retries": 3, "retry-backoff": 20}  # short waits: the tests are about counts, not patience


def fails(config: dict, *, timeout_ms: int = 10000, log: list | None = None, **request) -> FlintError:
    with pytest.raises(FlintError) as caught:
        send(config, timeout_ms=timeout_ms, log=log, **{**MAIL, **request})
    return caught.value


def retries_logged(log: list[tuple[str, str]]) -> list[str]:
    return [line for level, line in log if level == "warn" and "retrying in" in line]


# -- transient replies are retried --------------------------------------------------------------


def test_421_on_mail_then_accepted(smtp_servers: SmtpServers) -> None:
    handler = RecordingHandler(mail_replies=["421 4.7.0 too busy, come back later"])
    server = smtp_servers.start(handler=handler)
    log: list[tuple[str, str]] = []
    out = send(server.config(**FAST), log=log, **MAIL)

    assert out["result"] == "success" and out["accepted"] == ["a@example.org"]
    assert len(server.received) == 1 and handler.transactions == 2
    [retry] = retries_logged(log)
    assert retry == (f"attempt 1 of 4 to 127.0.0.1:{server.port} failed: SMTP 421 4.7.0 too busy, come back "
                     "later (sender <ops@example.org>); retrying in 20 ms")
    assert ("info", f"delivered to 127.0.0.1:{server.port} on attempt 2") in log


def test_451_twice_then_accepted_with_growing_waits(smtp_servers: SmtpServers) -> None:
    handler = RecordingHandler(data_replies=["451 4.3.0 local error", "451 4.3.0 local error"])
    server = smtp_servers.start(handler=handler)
    log: list[tuple[str, str]] = []
    out = send(server.config(**FAST), log=log, **MAIL)

    assert out["result"] == "success"
    assert len(server.received) == 1 and handler.data_commands == 3
    assert [line.rsplit(" ", 2)[-2] for line in retries_logged(log)] == ["20", "40"]


def test_452_on_rcpt_is_retried_before_anything_is_sent(smtp_servers: SmtpServers) -> None:
    handler = RecordingHandler(rcpt_replies=["452 4.5.3 too many recipients"])
    server = smtp_servers.start(handler=handler)
    out = send(server.config(**FAST), **{**MAIL, "to": ["a@example.org", "b@example.org"]})

    assert out["accepted"] == ["a@example.org", "b@example.org"] and out["refused"] == {}
    assert [r.rcpt_tos for r in server.received] == [["a@example.org", "b@example.org"]]
    assert handler.data_commands == 1  # the first transaction was abandoned before DATA


def test_a_recipient_deferred_on_every_attempt_is_reported_in_refused(smtp_servers: SmtpServers) -> None:
    handler = RecordingHandler(refuse_rcpt={"b@example.org": "452 4.2.2 mailbox full"})
    server = smtp_servers.start(handler=handler)
    out = send(server.config(retries=1, **{"retry-backoff": 10}), **{**MAIL, "to": ["a@example.org", "b@example.org"]})

    # Retried once for b's sake; on the last attempt the message goes to those who accept it.
    assert handler.transactions == 2 and [r.rcpt_tos for r in server.received] == [["a@example.org"]]
    assert out["accepted"] == ["a@example.org"] and out["refused"] == {"b@example.org": "452 4.2.2 mailbox full"}


def test_always_451_fails_after_the_configured_retries(smtp_servers: SmtpServers) -> None:
    handler = RecordingHandler(refuse_mail="451 4.3.0 try again later")
    server = smtp_servers.start(handler=handler)
    log: list[tuple[str, str]] = []
    error = fails(server.config(retries=2, **{"retry-backoff": 10}), log=log)

    assert isinstance(error, TransientFailure) and error.exit_code == -1
    assert str(error) == "SMTP 451 4.3.0 try again later (sender <ops@example.org>); gave up after 3 attempts"
    assert handler.transactions == 3 and server.received == []
    assert len(retries_logged(log)) == 2


def test_retries_zero_means_one_attempt(smtp_servers: SmtpServers) -> None:
    handler = RecordingHandler(refuse_mail="421 4.3.2 shutting down")
    server = smtp_servers.start(handler=handler)
    error = fails(server.config(retries=0))
    assert str(error) == "SMTP 421 4.3.2 shutting down (sender <ops@example.org>)" and handler.transactions == 1


@pytest.mark.parametrize("where", ["mail", "rcpt", "data"])
@pytest.mark.parametrize("reply", ["550 5.7.1 go away", "554 5.6.0 content rejected", "553 5.1.8 bad sender"])
def test_permanent_refusals_are_not_retried(smtp_servers: SmtpServers, where: str, reply: str) -> None:
    handler = RecordingHandler(**{f"{where}_replies": [reply]})
    server = smtp_servers.start(handler=handler)
    error = fails(server.config(**FAST))

    assert type(error) is RemoteRefused and error.exit_code == -1
    assert str(error).startswith(f"SMTP {reply}") and "attempt" not in str(error)
    assert handler.transactions == 1 and server.received == []


def test_a_5xx_after_a_retry_names_the_attempt(smtp_servers: SmtpServers) -> None:
    handler = RecordingHandler(mail_replies=["421 4.7.0 busy", "550 5.7.1 go away"])
    server = smtp_servers.start(handler=handler)
    error = fails(server.config(**FAST))
    assert str(error) == "SMTP 550 5.7.1 go away (sender <ops@example.org>) (attempt 2)"
    assert handler.transactions == 2


def test_the_policy_defaults_and_cap() -> None:
    policy = RetryPolicy()
    assert (policy.retries, policy.backoff_ms) == (3, 500)
    assert RetryPolicy(retries=10, backoff_ms=20000).delay_s(5) == 30.0


@pytest.mark.parametrize("module", ["connectors.smtp.retry", "connectors.smtp.fetch"])
def test_public_names_exist(module: str) -> None:
    import importlib

    loaded = importlib.import_module(module)
    assert loaded.__doc__ and loaded.__all__ and all(hasattr(loaded, name) for name in loaded.__all__)


def test_retry_keys_are_config_only(smtp_servers: SmtpServers) -> None:
    server = smtp_servers.start()
    assert "can be set only in the connector config" in str(fails(server.config(), retries=9))


# -- dropped connections: before the final "." retried, after it never ---------------------------


def _big_body() -> str:
    """A body far larger than the kernel's socket buffers, so a reset reaches a sender still sending."""
    try:
        send_buffer = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        send_buffer = 4 << 20
    line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n"
    return line * ((3 * send_buffer + (4 << 20)) // len(line))


def test_a_connection_reset_mid_data_is_retried_and_delivered_once(raw_smtp: RawSmtpServers) -> None:
    server = raw_smtp.start(RawBehaviour(drop_after=64 * 1024), RawBehaviour())
    body = _big_body()
    log: list[tuple[str, str]] = []
    out = send(server.config(**FAST), log=log, **{**MAIL, "content_type": "text/plain", "body": body})

    assert out["result"] == "success"
    assert server.connections == 2 and server.transactions == 2
    [message] = server.received
    whole = message.message.get_content().replace("\r\n", "\n") == body  # (no 16 MB diff on failure)
    assert whole
    [retry] = retries_logged(log)
    assert retry.startswith(f"attempt 1 of 4 to 127.0.0.1:{server.port} failed: connection to "
                            f"127.0.0.1:{server.port} closed by the server")


def test_421_and_a_closed_connection_is_retried(raw_smtp: RawSmtpServers) -> None:
    server = raw_smtp.start(RawBehaviour(mail_reply="421 4.3.2 closing"), RawBehaviour())
    out = send(server.config(**FAST), **MAIL)
    assert out["result"] == "success" and server.connections == 2 and len(server.received) == 1


def test_a_421_greeting_is_retried_and_a_554_greeting_is_not(raw_smtp: RawSmtpServers) -> None:
    busy = raw_smtp.start(RawBehaviour(greeting="421 4.3.2 too many connections"), RawBehaviour())
    out = send(busy.config(**FAST), **MAIL)
    assert out["result"] == "success" and busy.connections == 2 and len(busy.received) == 1

    closed = raw_smtp.start(RawBehaviour(greeting="554 5.3.2 no service here"), RawBehaviour())
    error = fails(closed.config(**FAST))
    assert isinstance(error, ConnectFailed) and error.exit_code == -4
    assert str(error) == f"SMTP server 127.0.0.1:{closed.port} refused the session: 554 5.3.2 no service here"
    assert closed.connections == 1


def test_a_connection_closed_before_the_greeting_is_retried(raw_smtp: RawSmtpServers) -> None:
    server = raw_smtp.start(RawBehaviour(close_at_once=True), RawBehaviour())
    out = send(server.config(**FAST), **MAIL)
    assert out["result"] == "success" and server.connections == 2 and len(server.received) == 1


def test_closed_after_the_final_dot_without_a_reply_is_not_retried(raw_smtp: RawSmtpServers) -> None:
    server = raw_smtp.start(RawBehaviour(close_after_dot=True), RawBehaviour())
    error = fails(server.config(**FAST))

    assert isinstance(error, ConnectFailed) and error.exit_code == -4
    assert "the server may have accepted the message" in str(error) and "not sent again" in str(error)
    assert server.connections == 1 and server.dots == 1  # the message reached it exactly once


def test_no_reply_to_the_final_dot_times_out_and_is_not_retried(raw_smtp: RawSmtpServers) -> None:
    server = raw_smtp.start(RawBehaviour(hang_after_dot=True), RawBehaviour())
    started = time.monotonic()
    error = fails(server.config(**FAST), timeout_ms=1500)

    assert isinstance(error, TimedOut) and error.exit_code == -6
    assert "the server may have accepted the message" in str(error)
    assert time.monotonic() - started < 1.5 + 1.0
    assert server.connections == 1 and server.dots == 1


def test_the_server_gone_on_retry_is_minus_4_with_the_count(raw_smtp: RawSmtpServers) -> None:
    server = raw_smtp.start(RawBehaviour(mail_reply="421 4.3.2 shutting down", stop_listening=True))
    error = fails(server.config(retries=2, **{"retry-backoff": 10}))

    assert isinstance(error, ConnectFailed) and error.exit_code == -4
    assert str(error) == f"connection refused: 127.0.0.1:{server.port}; gave up after 3 attempts"


def test_unreachable_on_the_first_attempt_is_not_retried(closed_port) -> None:
    host, port = closed_port
    started = time.monotonic()
    error = fails({"target": host, "port": port, "security": "none", "retries": 3, "retry-backoff": 2000})
    assert str(error) == f"connection refused: {host}:{port}" and time.monotonic() - started < 2.0


# -- the clock: slow is fine, a tarpit is -6, retries stay inside the timeout --------------------


def test_a_slow_server_within_the_timeout_succeeds(raw_smtp: RawSmtpServers) -> None:
    server = raw_smtp.start(RawBehaviour(reply_delay=0.15))
    out = send(server.config(**FAST), timeout_ms=5000, **MAIL)
    assert out["result"] == "success" and len(server.received) == 1 and server.connections == 1


def test_a_greeting_tarpit_times_out_within_the_timeout(raw_smtp: RawSmtpServers) -> None:
    server = raw_smtp.start(RawBehaviour(drip_greeting=0.05))  # a byte every 50 ms, never finished
    started = time.monotonic()
    error = fails(server.config(**FAST), timeout_ms=1000)

    assert isinstance(error, TimedOut) and error.exit_code == -6
    assert str(error) == f"timed out after 1000 ms talking to 127.0.0.1:{server.port}"
    assert time.monotonic() - started < 1.0 + 1.0
    assert server.connections == 1


def test_a_pooled_connection_outlives_the_deadline_of_the_request_that_opened_it(raw_smtp: RawSmtpServers) -> None:
    from connectors.base import ConnectorCall
    from connectors.smtp import SmtpConnector
    from connectors.smtp.pool import SmtpPool

    server = raw_smtp.start(RawBehaviour())
    connector = SmtpConnector("smtp", server.config())
    connector.pool = SmtpPool(check_after_s=0)  # NOOP before every reuse
    try:
        connector.run(MAIL, ConnectorCall(timeout_ms=300))
        time.sleep(0.4)  # that request's deadline has passed; its connection is idle and healthy
        connector.run(MAIL, ConnectorCall(timeout_ms=300))
    finally:
        connector.close()
    assert server.connections == 1 and len(server.received) == 2


def test_retries_never_go_past_the_request_timeout(smtp_servers: SmtpServers) -> None:
    handler = RecordingHandler(refuse_mail="451 4.3.0 try again later")
    server = smtp_servers.start(handler=handler)
    started = time.monotonic()
    error = fails(server.config(retries=10, **{"retry-backoff": 200}), timeout_ms=1500)
    elapsed = time.monotonic() - started

    assert isinstance(error, TransientFailure) and error.exit_code == -1
    assert elapsed < 1.5
    # Waits of 200, 400 ms fit; 800 more would not leave time for another attempt.
    assert handler.transactions == 3
    assert str(error) == ("SMTP 451 4.3.0 try again later (sender <ops@example.org>); gave up after 3 attempts: "
                          "no time for another within the 1500 ms timeout")


def test_the_time_an_attempt_takes_counts_against_the_retries(raw_smtp: RawSmtpServers) -> None:
    # Each attempt waits 4 x 0.2 s (greeting, EHLO, MAIL refused, RSET). The second ends near
    # 1.7 s; a third, 200 ms later and as long again, would pass 2.5 s: it is not started.
    server = raw_smtp.start(RawBehaviour(reply_delay=0.2, mail_reply="451 4.3.0 try again later"))
    started = time.monotonic()
    error = fails(server.config(retries=5, **{"retry-backoff": 100}), timeout_ms=2500)

    assert isinstance(error, TransientFailure) and time.monotonic() - started < 2.5
    assert server.connections == 2
    assert str(error).endswith("; gave up after 2 attempts: no time for another within the 2500 ms timeout")

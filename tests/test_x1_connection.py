"""The connection machine's policy (x1p1/x1/connection.py) and the tolerant readers
(x1p1/x1/readers.py): time is an argument, nothing here opens a socket."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from x1p1.exceptions import ForbiddenProfile, RateLimited, Unauthorized, X1Disabled
from x1p1.x1.connection import (
    AWAITS_GRANT_READ,
    CLOSE_EVENTS,
    FIRST_MESSAGE_WAIT,
    PACE_MAX,
    STALL_PACES,
    STATUS_EVENTS,
    TLS_VERSION_RETRY,
    TLS_VERSION_SENTENCE,
    Conn,
    ConnectionMachine,
    Ev,
    backoff_delay,
    classify_close,
    classify_handshake,
    classify_status,
)
from x1p1.x1.readers import (
    RETRY_AFTER_MAX,
    http_date,
    printable,
    read_error,
    read_request_state,
    read_time,
    retry_after,
)

NOW = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)


def connected(stall_timeout: float = 15.0, at: float = 0.0) -> ConnectionMachine:
    m = ConnectionMachine(rng=lambda: 1.0, can_discover=False, stall_timeout=stall_timeout)
    m.handle(Ev.CONNECT, at)
    m.handle(Ev.OPENED, at)
    return m


# --- classification -------------------------------------------------------------------------


def test_statuses_and_close_codes_come_from_the_shared_exceptions() -> None:
    assert STATUS_EVENTS == {
        Unauthorized.status: Ev.UNAUTHORIZED,
        ForbiddenProfile.status: Ev.FORBIDDEN,
        RateLimited.status: Ev.RATE_LIMITED,
        X1Disabled.status: Ev.DISABLED,
    }
    assert CLOSE_EVENTS == {
        4401: Ev.UNAUTHORIZED,
        4403: Ev.FORBIDDEN,
        4429: Ev.RATE_LIMITED,
        4503: Ev.DISABLED,
    }


@pytest.mark.parametrize(
    ("status", "event", "words"),
    [
        (401, Ev.UNAUTHORIZED, "refused the token"),
        (403, Ev.FORBIDDEN, "lacks the P1 profile now"),
        (429, Ev.RATE_LIMITED, "slow down"),
        (503, Ev.DISABLED, "switched off"),
        (500, Ev.FAILED, "refused the subscription (HTTP 500)"),
        (404, Ev.FAILED, "refused the subscription (HTTP 404)"),
        (308, Ev.FAILED, "(HTTP 308)"),
    ],
)
def test_each_refusal_is_classified(status: int, event: Ev, words: str) -> None:
    verdict = classify_status(status, profile="P1", where="gw:8443")
    assert verdict.event is event and words in verdict.sentence


@pytest.mark.parametrize(
    ("code", "event"),
    [
        (4401, Ev.UNAUTHORIZED),
        (4403, Ev.FORBIDDEN),
        (4503, Ev.DISABLED),
        (4429, Ev.RATE_LIMITED),
        (1000, Ev.FAILED),
        (1001, Ev.FAILED),
        (1011, Ev.FAILED),
        (4000, Ev.FAILED),
        (None, Ev.FAILED),
    ],
)
def test_each_close_code_is_classified(code: int | None, event: Ev) -> None:
    assert classify_close(code, "bye").event is event


def test_a_close_reason_cannot_forge_a_log_line() -> None:
    verdict = classify_close(1011, "oops\nJan 01 x1p1[1]: token accepted\x1b[2J")
    assert "\n" not in verdict.sentence and "\x1b" not in verdict.sentence
    assert "\\n" in verdict.sentence and "\\x1b" in verdict.sentence


def test_a_429_waits_for_its_retry_after_through_the_machine() -> None:
    m = connected()
    verdict = classify_status(
        429, profile="P1", where="gw", retry_after=retry_after("120", now=NOW, default=None)
    )
    assert m.verdict(verdict, 10.0) is Conn.BACKOFF and m.wake_at == 130.0


def test_a_gateway_without_tls_13_waits_no_less_than_the_slowest_backoff() -> None:
    """X1 §4.1.4: the adapter found a TLS-1.2-only gateway; the machine says it in one
    sentence and tries again only after the longest backoff, whatever the failures."""
    m = ConnectionMachine(rng=lambda: 1.0, can_discover=True)
    m.handle(Ev.CONNECT, 0.0)
    verdict = classify_handshake("tls-version", where="gw:443")
    assert verdict.event is Ev.OLD_TLS and verdict.sentence == TLS_VERSION_SENTENCE
    now = 0.0
    for _ in range(50):  # never a loop, never a rediscovery storm
        assert m.verdict(verdict, now) is Conn.TLS_VERSION
        assert m.deadline() == now + TLS_VERSION_RETRY
        assert TLS_VERSION_RETRY >= max(backoff_delay(n, lambda: 1.0) for n in range(100))
        assert m.expire(now + TLS_VERSION_RETRY - 0.001) is None
        now += TLS_VERSION_RETRY
        assert m.expire(now) is Ev.CONNECT and m.state is Conn.CONNECTING


def test_any_other_failed_handshake_is_a_plain_failure() -> None:
    detail = "TLS handshake failed (WRONG_VERSION_NUMBER\n)"
    verdict = classify_handshake("failed", where="gw:443", detail=detail)
    assert verdict.event is Ev.FAILED
    assert verdict.sentence == (
        "cannot reach the gateway gw:443: TLS handshake failed (WRONG_VERSION_NUMBER\\n)"
    )


# --- deadlines and pace ---------------------------------------------------------------------


def test_the_deadline_is_the_stall_limit_while_connected_and_the_wake_while_waiting() -> None:
    m = connected(at=100.0)
    assert m.deadline() == 100.0 + 15.0 * FIRST_MESSAGE_WAIT  # pace unknown yet
    m.message(101.0)
    assert m.deadline() == 116.0
    m.message(102.0)
    assert m.deadline() == 117.0  # a 1 s pace: the 15 s floor
    assert m.expire(116.9) is None and m.state is Conn.CONNECTED
    assert m.expire(117.0) is Ev.FAILED and m.stalled and m.state is Conn.BACKOFF
    assert m.deadline() == m.wake_at == 118.0
    assert m.expire(118.0) is Ev.CONNECT and m.state is Conn.CONNECTING
    assert m.deadline() is None


@pytest.mark.parametrize("pace", [1.0, 10.0, 20.0, 30.0])
def test_a_gateway_keeping_its_own_pace_is_never_stalled(pace: float) -> None:
    m = connected()
    now = 0.0
    for _ in range(50):
        now += pace
        assert not m.due(now)
        m.message(now)
        m.useful(now)
    assert m.state is Conn.CONNECTED and m.opened == 1
    limit = max(15.0, STALL_PACES * pace)
    assert m.stall_limit() == limit
    assert not m.due(now + limit - 0.01) and m.due(now + limit)


def test_the_pace_is_remembered_for_the_next_connection() -> None:
    m = connected()
    for t in (20.0, 40.0, 60.0):
        m.message(t)
    m.handle(Ev.FAILED, 61.0)
    m.handle(Ev.CONNECT, 62.0)
    m.handle(Ev.OPENED, 62.0)
    assert m.deadline() == 62.0 + STALL_PACES * 20.0


def test_a_huge_gap_does_not_grow_the_stall_limit_without_bound() -> None:
    m = connected()
    m.message(0.0)
    m.message(1e9)
    assert m.stall_limit() == STALL_PACES * PACE_MAX


def test_messages_are_liveness_whatever_the_pings() -> None:
    """A gateway that never answers pings keeps sending: the machine never fails it
    (the adapter does not drop on missing pongs: StreamSettings.ping_timeout is None)."""
    from x1p1.converter.stream import StreamSettings

    assert StreamSettings().ping_timeout is None
    m = connected()
    for t in range(1, 500):
        m.message(float(t))
        assert m.expire(float(t)) is None
    assert m.state is Conn.CONNECTED


def test_dropped_messages_are_counted_by_reason_until_a_useful_one() -> None:
    m = connected()
    for reason in ("crc", "crc", "syntax"):
        m.message(1.0)
        m.dropped_one(reason)
    assert dict(m.dropped) == {"crc": 2, "syntax": 1} and m.useful_at is None
    assert m.failures == 0
    m.useful(2.0)
    assert not m.dropped and m.useful_at == 2.0


def test_the_machine_imports_no_io() -> None:
    code = (
        "import sys\n"
        "import x1p1.x1.connection, x1p1.x1.readers, x1p1.x1.endpoints, x1p1.p1.reader\n"
        "print(sorted(m for m in ('asyncio', 'ssl', 'socket', 'serial', 'websockets')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- Retry-After ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Sun, 06 Dec 2026 06:02:00 GMT", 120.0),
        ("Sunday, 06-Dec-26 06:02:00 GMT", 120.0),
        ("Sun Dec  6 06:02:00 2026", 120.0),
        ("Sun, 06 Dec 2026 05:00:00 GMT", 0.0),  # in the past
        ("Mon, 07 Dec 2026 06:00:00 GMT", RETRY_AFTER_MAX),  # a day: capped
        ("86400", RETRY_AFTER_MAX),
        ("9" * 5000, RETRY_AFTER_MAX),
        ("²", 60.0),
        ("1.5", 60.0),
        ("-5", 60.0),
        ("soon", 60.0),
        ("", 60.0),
        (None, 60.0),
        ("Sun, 32 Dec 2026 06:02:00 GMT", 60.0),
    ],
)
def test_retry_after_has_one_reading(header: str | None, seconds: float) -> None:
    assert retry_after(header, now=NOW, default=60.0) == seconds


@given(st.text(max_size=80))
def test_retry_after_never_raises_and_never_exceeds_an_hour(header: str) -> None:
    value = retry_after(header, now=NOW, default=None)
    assert value is None or 0.0 <= value <= RETRY_AFTER_MAX
    http_date(header)


# --- gateway text -----------------------------------------------------------------------------


@given(st.text(max_size=1000))
def test_printable_is_one_capped_line_of_printable_characters(text: str) -> None:
    out = printable(text)
    assert out.isprintable() and len(out) <= 201


def test_printable_escapes_what_a_terminal_or_the_journal_would_act_on() -> None:
    assert printable("a\nb\r\tc\x1b[31m\u202e\x7f") == "a\\nb\\r\\tc\\x1b[31m\\u202e\\x7f"
    assert printable("x" * 500, 10) == "x" * 10 + "…"
    assert printable(None) == "None"


# --- times and answers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-06T06:00:00Z",
        "2026-12-06T06:00:00z",
        "2026-12-06T07:00:00+01:00",
        "2026-12-06T06:00:00.000Z",
        "2026-12-06T06:00:00",
        "2026-12-06 06:00:00",
        1796536800,
        1796536800.0,
        "1796536800",
        1796536800000,
    ],
)
def test_read_time_takes_the_forms_gateways_write(value: object) -> None:
    assert read_time(value) == NOW


@pytest.mark.parametrize("value", [None, True, "", "tomorrow", [], {}, float("nan"), "9" * 40])
def test_read_time_takes_nothing_else(value: object) -> None:
    assert read_time(value) is None


def test_a_request_answer_needs_only_a_status() -> None:
    answer = read_request_state({"status": "Pending"})
    assert answer is not None and answer.status == "pending"
    assert answer.request_id is None and answer.expires_at is None and answer.code is None
    full = read_request_state(
        {
            "status": "APPROVED",
            "request_id": "r1",
            "expires_at": None,
            "token": "t",
            "profiles": ["p1", "E-FORECAST"],
            "code": "0042",
            "extra": {"anything": 1},
        }
    )
    assert full is not None and full.status == "approved" and full.token == "t"
    assert full.profiles == ("P1", "E-FORECAST") and full.code == "0042"
    assert read_request_state({"status": "pending", "code": 42}).code == "0042"  # type: ignore[union-attr]
    assert read_request_state({"status": "pending", "code": "12345"}).code is None  # type: ignore[union-attr]
    for bad in (None, [], "pending", {}, {"status": None}, {"status": 3}):
        assert read_request_state(bad) is None


def test_an_error_answer_is_read_whatever_its_shape() -> None:
    assert read_error({"error": "Rate-Limited", "message": "wait\n"}).code == "rate-limited"
    assert read_error({"detail": "nope"}).message == "nope"
    plain = read_error(None, "Too many\nrequests\x1b")
    assert plain.code is None and plain.message == "Too many requests\\x1b"


def test_every_reader_of_retry_after_is_the_one() -> None:
    from x1p1.exceptions import RateLimited
    from x1p1.x1.readers import x1_error_from_body

    body = {"error": "rate-limited", "message": "slow down"}
    for header, seconds in (("²", 60), ("30", 30), ("99999999999", 3600), ("", 60)):
        error = x1_error_from_body(429, body, {"Retry-After": header}, now=datetime.now(UTC))
        assert isinstance(error, RateLimited) and error.retry_after == seconds, header


def test_a_changed_grant_is_followed_not_taken_for_a_revoked_token() -> None:
    """X1 §5.1.6: a 4403 (or 403) means the customer changed the profiles. The sentence says
    so, never "revoked" or "run x1p1 pair", and the machine waits for the grant to be read
    again, then connects at once (or waits for a grant, when it allows nothing)."""
    for verdict in (
        classify_close(4403, "forbidden-profile"),
        classify_status(403, profile="P1", where="gw:8443"),
    ):
        assert "the customer changed this device's profiles; following them" in verdict.sentence
        assert "revoked" not in verdict.sentence and "x1p1 pair" not in verdict.sentence
        assert verdict.level < logging.ERROR
    for start in (Conn.CONNECTING, Conn.CONNECTED):
        m = ConnectionMachine(rng=lambda: 1.0)
        m.handle(Ev.CONNECT, 0.0)
        if start is Conn.CONNECTED:
            m.handle(Ev.OPENED, 1.0)
        assert m.verdict(classify_close(4403), 2.0) is Conn.REGRANT
        assert Conn.REGRANT in AWAITS_GRANT_READ
        assert m.deadline() is None  # the source machine says when to read (source.py)
        for ignored in (Ev.CONNECT, Ev.FAILED, Ev.OPENED):
            assert m.handle(ignored, 3.0) is Conn.REGRANT
        assert m.handle(Ev.RETARGET, 3.0) is Conn.CONNECTING  # the grant read: at once
        assert m.handle(Ev.NO_GRANT, 3.0) is Conn.NO_GRANT  # it allows nothing: wait
        assert m.deadline() is None and m.handle(Ev.CONNECT, 4.0) is Conn.NO_GRANT
        assert m.handle(Ev.RETARGET, 60.0) is Conn.CONNECTING  # granted in the portal

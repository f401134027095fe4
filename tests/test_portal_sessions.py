"""Portal logins, sessions and elevations (x1p1.x1.sessions), sans I/O: time is an argument."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from x1p1.exceptions import BadRequest, NotFound, RateLimited, RequestNotPending, Unauthorized
from x1p1.x1.pairing import token_digest
from x1p1.x1.sessions import (
    ELEVATION_LIFETIME,
    ELEVATION_TRANSITIONS,
    LOGIN_TRANSITIONS,
    MAX_PENDING,
    SESSION_TRANSITIONS,
    PortalRequestEvent,
    PortalRequestKind,
    PortalRequestStatus,
    SessionEvent,
    Sessions,
    SessionStatus,
    clean_user_agent,
    csrf_ok,
    csrf_token,
    describe_user_agent,
    next_request_status,
    next_session_status,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari"
R, E = PortalRequestStatus, PortalRequestEvent


def kinds(core: Sessions) -> list[str]:
    return [c.kind for c in core.take_changes()]


def logged_in(core: Sessions, now: datetime = T0) -> tuple[str, str]:
    """A session made the whole way: returns (session_id, session secret)."""
    request, secret = core.start_login(UA, now)
    core.approve(request.request_id, now)
    poll = core.poll_login(secret, now)
    assert poll.session is not None and poll.secret is not None
    return poll.session.session_id, poll.secret


# --- the tables --------------------------------------------------------------------------


def test_login_table() -> None:
    for status, event in itertools.product(R, E):
        allowed = LOGIN_TRANSITIONS[status].get(event)
        if allowed is None:
            with pytest.raises(RequestNotPending):
                next_request_status(PortalRequestKind.LOGIN, status, event)
        else:
            assert next_request_status(PortalRequestKind.LOGIN, status, event) is allowed
    assert LOGIN_TRANSITIONS[R.APPROVED] == {
        E.CLAIM: R.CLAIMED,
        E.EXPIRE: R.EXPIRED,
        E.CANCEL: R.CANCELLED,
    }
    for final in (R.DENIED, R.EXPIRED, R.CANCELLED, R.CLAIMED):
        assert LOGIN_TRANSITIONS[final] == {}


def test_elevation_table_has_no_claim_and_ends_at_approval() -> None:
    assert E.CLAIM not in ELEVATION_TRANSITIONS[R.PENDING]
    assert all(ELEVATION_TRANSITIONS[s] == {} for s in R if s is not R.PENDING)
    with pytest.raises(RequestNotPending):
        next_request_status(PortalRequestKind.ELEVATION, R.APPROVED, E.CLAIM)


def test_session_table_only_active_moves() -> None:
    for status, event in itertools.product(SessionStatus, SessionEvent):
        if status is SessionStatus.ACTIVE:
            assert next_session_status(status, event) is SESSION_TRANSITIONS[status][event]
        else:
            with pytest.raises(Unauthorized):
                next_session_status(status, event)


# --- login ------------------------------------------------------------------------------------


def test_login_approved_on_the_meter_then_claimed_once() -> None:
    core = Sessions()
    request, secret = core.start_login(UA, T0)
    assert request.status is R.PENDING and request.secret_digest == token_digest(secret)
    assert secret not in repr(request)
    assert [r.request_id for r in core.pending(T0)] == [request.request_id]
    assert core.poll_login(secret, T0).request.status is R.PENDING
    approved = core.approve(None, T0 + timedelta(seconds=5))  # the button: oldest pending
    assert approved.status is R.APPROVED and approved.decided_by == "meter"
    assert core.pending(T0) == []
    poll = core.poll_login(secret, T0 + timedelta(seconds=6))
    assert poll.session is not None and poll.secret is not None
    assert poll.request.status is R.CLAIMED and poll.request.session_id == poll.session.session_id
    assert poll.session.digest == token_digest(poll.secret)
    assert poll.session.expires_at == T0 + timedelta(seconds=6, days=90)
    again = core.poll_login(secret, T0 + timedelta(seconds=7))
    assert again.session is None and again.secret is None  # the secret is handed out once
    assert kinds(core) == ["login-requested", "login-approved", "login-claimed", "session-started"]
    session = core.authenticate(poll.secret, T0 + timedelta(minutes=1))
    assert session.session_id == poll.session.session_id


def test_login_denied_is_visible_ten_minutes_then_gone() -> None:
    core = Sessions()
    request, secret = core.start_login(UA, T0)
    core.deny(request.request_id, T0 + timedelta(minutes=1))
    assert core.poll_login(secret, T0 + timedelta(minutes=2)).request.status is R.DENIED
    assert [r.status for r in core.requests(T0 + timedelta(minutes=10))] == [R.DENIED]
    assert core.requests(T0 + timedelta(minutes=11, seconds=1)) == []
    with pytest.raises(RequestNotPending):
        core.approve(request.request_id, T0 + timedelta(minutes=3))


def test_login_expires_after_ten_minutes_and_an_unclaimed_approval_too() -> None:
    core = Sessions()
    request, secret = core.start_login(UA, T0)
    assert core.poll_login(secret, T0 + timedelta(minutes=10)).request.status is R.EXPIRED
    second, secret2 = core.start_login(UA, T0 + timedelta(minutes=20))
    core.approve(second.request_id, T0 + timedelta(minutes=21))
    assert core.poll_login(secret2, T0 + timedelta(minutes=30)).request.status is R.EXPIRED
    assert "login-expired" in kinds(core)


def test_same_browser_asking_again_replaces_its_request() -> None:
    core = Sessions()
    first, secret = core.start_login(UA, T0)
    second, _ = core.start_login(UA, T0 + timedelta(seconds=1), previous_secret=secret)
    assert [r.request_id for r in core.pending(T0)] == [second.request_id]
    assert core.request(first.request_id).status is R.CANCELLED


def test_pending_is_capped() -> None:
    core = Sessions()
    for i in range(MAX_PENDING):
        core.start_login(UA, T0 + timedelta(seconds=i))
    with pytest.raises(RateLimited) as caught:
        core.start_login(UA, T0 + timedelta(seconds=30))
    assert caught.value.retry_after == 10 * 60 - 30


def test_unknown_login_secrets() -> None:
    core = Sessions()
    for secret in (None, "", "x" * 43, "not a secret"):
        with pytest.raises(NotFound):
            core.poll_login(secret, T0)


def test_another_session_may_approve_a_login_but_not_an_elevation() -> None:
    core = Sessions()
    session_id, _ = logged_in(core)
    request, secret = core.start_login("Firefox/130 Android", T0)
    approved = core.approve(request.request_id, T0, by=f"session:{session_id}")
    assert approved.decided_by == f"session:{session_id}"
    elevation = core.request_elevation(session_id, T0)
    with pytest.raises(BadRequest):
        core.approve(elevation.request_id, T0, by=f"session:{session_id}")
    with pytest.raises(BadRequest):
        core.deny(elevation.request_id, T0, by=f"session:{session_id}")


# --- elevation ---------------------------------------------------------------------------------


def test_elevation_holds_sixty_minutes() -> None:
    core = Sessions()
    session_id, _ = logged_in(core)
    core.take_changes()
    assert not core.session(session_id).elevated(T0)
    request = core.request_elevation(session_id, T0)
    assert request.kind is PortalRequestKind.ELEVATION and request.session_id == session_id
    assert core.request_elevation(session_id, T0 + timedelta(seconds=3)) == request  # one only
    core.approve(None, T0 + timedelta(minutes=1))
    session = core.session(session_id)
    assert session.elevated_until == T0 + timedelta(minutes=1) + ELEVATION_LIFETIME
    assert session.elevated(T0 + timedelta(minutes=60, seconds=59))
    assert not session.elevated(T0 + timedelta(minutes=61))
    assert kinds(core) == ["elevation-requested", "elevation-approved", "session-elevated"]
    core.unelevate(session_id, T0 + timedelta(minutes=2))
    assert not core.session(session_id).elevated(T0 + timedelta(minutes=2))


def test_elevation_denied_or_expired_gives_nothing() -> None:
    core = Sessions()
    session_id, _ = logged_in(core)
    request = core.request_elevation(session_id, T0)
    core.deny(request.request_id, T0)
    assert not core.session(session_id).elevated(T0)
    request = core.request_elevation(session_id, T0 + timedelta(minutes=1))
    assert core.pending(T0 + timedelta(minutes=11)) == []
    assert core.request(request.request_id).status is R.EXPIRED


def test_ending_a_session_cancels_its_elevation_request_and_access() -> None:
    core = Sessions()
    session_id, _ = logged_in(core)
    request = core.request_elevation(session_id, T0)
    core.logout(session_id, T0)
    assert core.request(request.request_id).status is R.CANCELLED
    with pytest.raises(Unauthorized):
        core.request_elevation(session_id, T0)


# --- sessions -----------------------------------------------------------------------------------


def test_renewal_on_use_is_persisted_at_most_hourly() -> None:
    core = Sessions()
    session_id, secret = logged_in(core)
    core.take_changes()
    for minutes in (1, 30, 59):
        session = core.authenticate(secret, T0 + timedelta(minutes=minutes))
        assert session.expires_at == T0 + timedelta(minutes=minutes, days=90)
    assert kinds(core) == []
    core.authenticate(secret, T0 + timedelta(minutes=60))
    assert kinds(core) == ["session-renewed"]


def test_a_session_expires_after_ninety_idle_days() -> None:
    core = Sessions()
    _, secret = logged_in(core)
    core.authenticate(secret, T0 + timedelta(days=89))
    with pytest.raises(Unauthorized):
        core.authenticate(secret, T0 + timedelta(days=89 + 90))
    assert "session-expired" in kinds(core)


def test_logout_and_revoke_end_sessions() -> None:
    core = Sessions()
    first, secret1 = logged_in(core)
    second, secret2 = logged_in(core)
    core.logout(first, T0)
    with pytest.raises(Unauthorized):
        core.authenticate(secret1, T0)
    core.revoke(second, T0, "by another browser")
    with pytest.raises(Unauthorized):
        core.authenticate(secret2, T0)
    with pytest.raises(NotFound):
        core.revoke(second, T0)
    assert core.sessions(T0) == []


def test_revoke_all_ends_everything_open() -> None:
    core = Sessions()
    session_id, secret = logged_in(core)
    pending, _ = core.start_login(UA, T0)
    approved, approved_secret = core.start_login(UA, T0)
    core.approve(approved.request_id, T0)
    ended = core.revoke_all(T0, "history was blocked")
    assert [s.session_id for s in ended] == [session_id]
    assert core.request(pending.request_id).status is R.CANCELLED
    assert core.poll_login(approved_secret, T0).request.status is R.CANCELLED
    with pytest.raises(Unauthorized):
        core.authenticate(secret, T0)


def test_restore_then_authenticate() -> None:
    core = Sessions()
    session_id, secret = logged_in(core)
    records = core.take_changes()
    requests = {c.record.request_id: c.record for c in records if hasattr(c.record, "kind")}
    sessions = [c.record for c in records if c.kind == "session-started"]
    again = Sessions()
    again.restore(requests.values(), sessions)  # type: ignore[arg-type]
    assert again.authenticate(secret, T0).session_id == session_id


def test_prune_drops_old_records() -> None:
    core = Sessions()
    session_id, _ = logged_in(core)
    core.logout(session_id, T0)
    core.take_changes()
    core.prune(T0 + timedelta(days=2))
    assert sorted(kinds(core)) == ["portal-request-dropped", "session-dropped"]
    with pytest.raises(NotFound):
        core.session(session_id)


# --- helpers ---------------------------------------------------------------------------------


def test_csrf_token_belongs_to_its_session() -> None:
    core = Sessions()
    _, secret1 = logged_in(core)
    _, secret2 = logged_in(core)
    token = csrf_token(secret1)
    assert len(token) == 43 and token != csrf_token(secret2)
    assert csrf_ok(secret1, token)
    assert not csrf_ok(secret2, token)
    assert not csrf_ok(secret1, None) and not csrf_ok(secret1, "") and not csrf_ok(secret1, "é")


@pytest.mark.parametrize(
    ("ua", "name"),
    [
        (UA, "Chrome 126 on Linux"),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:130.0) Gecko/20100101 Firefox/130.0",
            "Firefox 130 on Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "Safari 17 on iPhone",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/156.0.0.0 Safari/537.36",
            "Headless Chrome 156 on Linux",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36 "
            "EdgA/126.0",
            "Edge 126 on Android",
        ),
        ("curl/8.5.0", "curl 8"),
        ("SomethingElse", "SomethingElse"),
    ],
)
def test_describe_user_agent(ua: str, name: str) -> None:
    assert describe_user_agent(ua) == name


def test_clean_user_agent() -> None:
    assert clean_user_agent(None) == "unknown browser"
    assert clean_user_agent("  a\x00b\n\tc  ") == "a b c"
    assert len(clean_user_agent("x" * 1000)) == 256


def test_codes_are_four_digits() -> None:
    core = Sessions()
    request, _ = core.start_login(UA, T0)
    assert len(request.code) == 4 and request.code.isdigit()

"""The ledger of the meter's button (x1p1.x1.grants), sans I/O: time is an argument.

Device tokens (§5.1.2–§5.1.7, §5.2), portal logins (§5.1.3) and admin access (§9.2.2)
go through the same tables; these tests drive them with ``now`` passed in."""

from __future__ import annotations

import itertools
import os
import random
import uuid as uuid_module
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from x1p1.exceptions import (
    BadRequest,
    NotFound,
    RateLimited,
    RequestNotPending,
    SeveralWaiting,
    Unauthorized,
)
from x1p1.x1.api import RequestStatus, TokenRequestBody
from x1p1.x1.grants import (
    ANSWER_GRACE,
    DENIED_VISIBLE,
    ELEVATION_LIFETIME,
    GRANT_TABLES,
    KEEP_DECIDED,
    MAX_PENDING,
    PER_ADDRESS,
    RENEW_PERSIST_EVERY,
    REQUEST_TABLES,
    Event,
    GrantEvent,
    GrantKind,
    GrantState,
    Ledger,
    RequestEvent,
    RequestKind,
    RequestState,
    clean_user_agent,
    csrf_ok,
    csrf_token,
    describe_user_agent,
    looks_like_secret,
    new_secret,
    next_grant_state,
    next_request_state,
    secret_digest,
)
from x1p1.x1.profiles import Profile

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari"
HOME = "192.168.1.20"
"""The customer's own host; others on the home network have other addresses."""
R = RequestState


def body(
    uuid: str | None = None, profiles: tuple[str, ...] = ("P1",), name: str = "dev"
) -> TokenRequestBody:
    return TokenRequestBody.parse(
        {"name": name, "uuid": uuid or str(uuid_module.uuid4()), "profiles": list(profiles)}
    )


def events(ledger: Ledger) -> list[str]:
    return [c.event.value for c in ledger.take_changes()]


def paired(
    ledger: Ledger, at: datetime = T0, device: str | None = None, address: str = HOME
) -> tuple[str, str]:
    """A device paired the whole way: (secret, token id)."""
    request = ledger.request_device(body(device), address, at)
    ledger.approve(request.request_id, at)
    secret = ledger.device_state(request.request_id, at).token
    assert secret is not None and request.grant_id is None
    return secret, ledger.request(request.request_id).grant_id or ""


def logged_in(ledger: Ledger, now: datetime = T0, address: str = HOME) -> tuple[str, str]:
    """A portal session made the whole way: (session id, session secret)."""
    request, secret = ledger.start_login(UA, address, now)
    ledger.approve(request.request_id, now)
    poll = ledger.poll_login(secret, now)
    assert poll.session is not None and poll.secret is not None
    return poll.session.grant_id, poll.secret


# --- the tables --------------------------------------------------------------------------


def test_request_tables_allow_only_their_moves() -> None:
    for kind, state, event in itertools.product(RequestKind, RequestState, RequestEvent):
        allowed = REQUEST_TABLES[kind][state].get(event)
        if allowed is None:
            with pytest.raises(RequestNotPending):
                next_request_state(kind, state, event)
        else:
            assert next_request_state(kind, state, event) is allowed
    # only a login is claimed, and only once approved; a device request only expires
    assert RequestEvent.CLAIM not in REQUEST_TABLES[RequestKind.ELEVATION][R.APPROVED]
    assert REQUEST_TABLES[RequestKind.LOGIN][R.APPROVED][RequestEvent.CLAIM] is R.CLAIMED
    assert RequestEvent.CANCEL not in REQUEST_TABLES[RequestKind.DEVICE][R.PENDING]


def test_grant_tables_allow_only_their_moves() -> None:
    for kind, state, event in itertools.product(GrantKind, GrantState, GrantEvent):
        allowed = GRANT_TABLES[kind][state].get(event)
        if allowed is None:
            with pytest.raises(Unauthorized):
                next_grant_state(kind, state, event)
        else:
            assert next_grant_state(kind, state, event) is allowed
    assert GrantEvent.ELEVATE not in GRANT_TABLES[GrantKind.TOKEN][GrantState.ACTIVE]
    assert GrantEvent.CHANGE_PROFILES not in GRANT_TABLES[GrantKind.SESSION][GrantState.ACTIVE]


def test_every_state_a_request_reaches_has_an_event() -> None:
    from x1p1.x1.grants import _REQUEST_EVENTS

    for kind, row in REQUEST_TABLES.items():
        for state in {R.PENDING, *(s for moves in row.values() for s in moves.values())}:
            assert (kind, state) in _REQUEST_EVENTS, (kind, state)


def test_secret_format_and_digest() -> None:
    secret = new_secret()
    assert len(secret) == 43 and looks_like_secret(secret)
    assert not looks_like_secret(secret[:-1]) and not looks_like_secret(secret + "A")
    assert secret_digest(secret) != secret and len(secret_digest(secret)) == 64
    assert new_secret() != secret


# --- device requests (§5.1.2–§5.1.7) -----------------------------------------------------


def test_approve_issues_a_token_that_authenticates() -> None:
    ledger = Ledger()
    request = ledger.request_device(body(profiles=("P1", "E-REALTIME")), HOME, T0)
    assert events(ledger) == ["request-created"]
    state = ledger.device_state(request.request_id, T0)
    assert state.status is RequestStatus.PENDING and state.token is None
    assert state.code == request.code and len(request.code) == 4 and request.code.isdigit()
    approved = ledger.approve(None, T0 + timedelta(minutes=1))  # the only one waiting
    assert approved.state is R.APPROVED and approved.decided_by == "meter"
    assert events(ledger) == ["request-approved", "token-issued"]
    state = ledger.device_state(request.request_id, T0 + timedelta(minutes=2))
    assert state.token is not None and state.profiles == {Profile.P1, Profile.E_REALTIME}
    grant = ledger.authenticate(state.token, T0 + timedelta(minutes=3))
    assert grant.kind is GrantKind.TOKEN and grant.grant_id == approved.grant_id
    assert grant.digest == secret_digest(state.token)


def test_the_meter_grants_profiles_as_asked_and_the_portal_may_change_them() -> None:
    ledger = Ledger()
    request = ledger.request_device(body(profiles=("P1", "E-HISTORIC")), HOME, T0)
    with pytest.raises(BadRequest, match="as asked"):
        ledger.approve(request.request_id, T0, profiles=frozenset({Profile.P1}))
    approved = ledger.approve(
        request.request_id, T0, by="session:abc", profiles=frozenset({Profile.P1})
    )
    assert approved.granted == {Profile.P1}
    other = ledger.request_device(body(), HOME, T0)
    with pytest.raises(BadRequest):
        ledger.approve(other.request_id, T0, by="session:abc", profiles=frozenset())


def test_deny_and_decided_requests_cannot_be_decided_again() -> None:
    ledger = Ledger()
    request = ledger.request_device(body(), HOME, T0)
    assert ledger.deny(None, T0).state is R.DENIED
    assert ledger.device_state(request.request_id, T0).status is RequestStatus.DENIED
    with pytest.raises(RequestNotPending):
        ledger.approve(request.request_id, T0)
    with pytest.raises(NotFound):
        ledger.approve(None, T0)  # nothing waits
    with pytest.raises(NotFound):
        ledger.deny("no-such-id", T0)


def test_a_denied_request_stays_visible_ten_minutes() -> None:
    ledger = Ledger()
    request = ledger.request_device(body(), HOME, T0)
    ledger.deny(request.request_id, T0 + timedelta(minutes=1))
    seen = ledger.visible(T0 + timedelta(minutes=1) + DENIED_VISIBLE - timedelta(seconds=1))
    assert [r.request_id for r in seen] == [request.request_id]
    assert ledger.visible(T0 + timedelta(minutes=1) + DENIED_VISIBLE) == []


def test_expiry_after_ten_minutes_and_the_id_stops_answering() -> None:
    ledger = Ledger()
    request = ledger.request_device(body(), HOME, T0)
    ledger.take_changes()
    just_before = T0 + timedelta(minutes=10) - timedelta(microseconds=1)
    assert ledger.device_state(request.request_id, just_before).status is RequestStatus.PENDING
    at = T0 + timedelta(minutes=10)
    assert ledger.device_state(request.request_id, at).status is RequestStatus.EXPIRED
    changes = ledger.take_changes()
    assert [c.event for c in changes] == [Event.DEVICE_EXPIRED]
    assert changes[0].record.decided_at == at  # type: ignore[union-attr]
    with pytest.raises(RequestNotPending):
        ledger.approve(request.request_id, at)
    with pytest.raises(NotFound):
        ledger.device_state(request.request_id, at + timedelta(seconds=1))
    assert ledger.pending(at) == []


def test_an_approval_at_9_50_still_reaches_a_poll_at_10_05() -> None:
    ledger = Ledger()
    request = ledger.request_device(body(), HOME, T0)
    ledger.approve(None, T0 + timedelta(minutes=9, seconds=50))
    late = T0 + timedelta(minutes=10, seconds=5)
    assert ledger.device_state(request.request_id, late).token
    end = T0 + timedelta(minutes=10) + ANSWER_GRACE
    assert ledger.device_state(request.request_id, end).token
    with pytest.raises(NotFound):
        ledger.device_state(request.request_id, end + timedelta(seconds=1))


def test_at_most_sixteen_pending_of_a_kind() -> None:
    ledger = Ledger()
    for i in range(MAX_PENDING[RequestKind.DEVICE]):
        ledger.request_device(body(), f"10.0.0.{i}", T0 + timedelta(seconds=i))
    with pytest.raises(RateLimited) as caught:
        ledger.request_device(body(), "10.0.0.99", T0 + timedelta(seconds=30))
    assert caught.value.retry_after == 600 - 30  # until the oldest expires
    assert caught.value.headers() == {"Retry-After": "570"}
    # the other kinds are not affected: logins still get in
    ledger.start_login(UA, HOME, T0 + timedelta(seconds=31))


def test_a_full_queue_makes_room_for_a_host_that_has_none_waiting() -> None:
    """Eight hosts with two each fill the sixteen places; a ninth takes the place of the
    oldest request of a host holding two, and so do the next seven. Then every request
    waits alone: a host with none waiting is refused, as is one with a request waiting."""
    ledger = Ledger()
    full = MAX_PENDING[RequestKind.DEVICE]
    made = [
        ledger.request_device(body(), f"10.0.0.{i % 8}", T0 + timedelta(seconds=i))
        for i in range(full)
    ]
    newcomers = []
    for n in range(8):
        at = T0 + timedelta(seconds=100 + n)
        newcomers.append(ledger.request_device(body(), f"10.0.1.{n}", at))
        assert ledger.request(made[n].request_id).state is R.EXPIRED  # host n's oldest
        assert len(ledger.pending(at, RequestKind.DEVICE)) == full
    waiting = ledger.pending(T0 + timedelta(seconds=200), RequestKind.DEVICE)
    assert [r.request_id for r in waiting] == [r.request_id for r in made[8:] + newcomers]
    with pytest.raises(RateLimited, match="16 requests are already waiting"):
        ledger.request_device(body(), "10.0.2.1", T0 + timedelta(seconds=201))
    with pytest.raises(RateLimited):
        ledger.request_device(body(), "10.0.1.0", T0 + timedelta(seconds=202))
    # the rule is the ledger's for every kind: logins too
    for i in range(MAX_PENDING[RequestKind.LOGIN]):
        ledger.start_login(UA, f"10.0.0.{i % 8}", T0 + timedelta(seconds=300 + i))
    request, _ = ledger.start_login(UA, HOME, T0 + timedelta(seconds=400))
    logins = ledger.pending(T0 + timedelta(seconds=401), RequestKind.LOGIN)
    assert len(logins) == full and logins[-1].request_id == request.request_id
    assert logins[0].address == "10.0.0.1"  # 10.0.0.0's older login gave way


def test_one_address_holds_at_most_two_of_a_kind_and_a_third_replaces_its_oldest() -> None:
    ledger = Ledger()
    intruder = "192.168.1.66"
    made = [ledger.request_device(body(), intruder, T0 + timedelta(seconds=i)) for i in range(40)]
    waiting = ledger.pending(T0 + timedelta(seconds=41), RequestKind.DEVICE)
    assert [r.request_id for r in waiting] == [r.request_id for r in made[-PER_ADDRESS:]]
    assert ledger.request(made[0].request_id).state is R.EXPIRED
    # the customer's device is never refused because of the intruder
    mine = ledger.request_device(body(name="dongle"), HOME, T0 + timedelta(seconds=42))
    for i in range(40):
        ledger.start_login("evil", intruder, T0 + timedelta(seconds=43 + i))
    assert len(ledger.pending(T0 + timedelta(seconds=90), RequestKind.LOGIN)) == PER_ADDRESS
    ledger.start_login(UA, HOME, T0 + timedelta(seconds=91))
    assert ledger.request(mine.request_id).state is R.PENDING


def test_a_new_request_of_a_device_replaces_its_pending_one() -> None:
    ledger = Ledger()
    device = str(uuid_module.uuid4())
    first = ledger.request_device(body(device), HOME, T0)
    second = ledger.request_device(body(device), "10.0.0.2", T0 + timedelta(seconds=5))
    pending = ledger.pending(T0 + timedelta(seconds=6))
    assert [r.request_id for r in pending] == [second.request_id]
    status = ledger.device_state(first.request_id, T0 + timedelta(seconds=6)).status
    assert status is RequestStatus.EXPIRED


def test_three_denials_within_an_hour_throttle_for_an_hour() -> None:
    ledger = Ledger()
    device = str(uuid_module.uuid4())
    at = T0
    for _ in range(3):
        ledger.request_device(body(device), HOME, at)
        ledger.deny(None, at + timedelta(minutes=1))
        at += timedelta(minutes=20)
    third_denial = T0 + timedelta(minutes=41)
    with pytest.raises(RateLimited) as caught:
        ledger.request_device(body(device), HOME, at)
    expected = int((third_denial + timedelta(hours=1) - at).total_seconds())
    assert caught.value.retry_after == expected
    ledger.request_device(body(), HOME, at)  # other devices are not throttled
    with pytest.raises(RateLimited):
        ledger.request_device(body(device), HOME, third_denial + timedelta(minutes=59))
    ledger.request_device(body(device), "10.0.0.3", third_denial + timedelta(hours=1))


def test_expiries_do_not_count_as_denials() -> None:
    ledger = Ledger()
    device = str(uuid_module.uuid4())
    for i in range(4):
        ledger.request_device(body(device), HOME, T0 + timedelta(minutes=11 * i))
    ledger.request_device(body(device), HOME, T0 + timedelta(minutes=45))


# --- the button (§5.1.5) -------------------------------------------------------------------


def test_the_button_refuses_to_guess_when_several_wait() -> None:
    """The hijacked press: another host's request queued first never gets the customer's
    press; the customer names the request by the code on the display."""
    ledger = Ledger()
    attacker = ledger.request_device(body(name="x1p1 on raspberrypi"), "10.0.0.66", T0)
    mine = ledger.request_device(body(name="x1p1 on raspberrypi"), HOME, T0 + timedelta(seconds=1))
    assert attacker.code != mine.code
    assert ledger.display(T0 + timedelta(seconds=2)) == attacker  # oldest first
    with pytest.raises(SeveralWaiting) as caught:
        ledger.approve(None, T0 + timedelta(seconds=3))
    assert [w[1] for w in caught.value.waiting] == [attacker.code, mine.code]
    assert caught.value.body()["waiting"][1]["request_id"] == mine.request_id
    assert ledger.request(attacker.request_id).state is R.PENDING
    approved = ledger.approve(None, T0 + timedelta(seconds=4), code=mine.code)
    assert approved.request_id == mine.request_id
    assert ledger.request(attacker.request_id).state is R.PENDING
    with pytest.raises(NotFound, match="code"):
        ledger.deny(None, T0 + timedelta(seconds=5), code=mine.code)  # no longer waiting


def test_the_button_across_kinds_and_codes_are_unique_among_pending() -> None:
    codes = [b"\x00\x00\x00\x07", b"\x00\x00\x27\x17", b"\x00\x00\x00\x08"]

    def random_bytes(size: int) -> bytes:
        return codes.pop(0) if size == 4 else os.urandom(size)

    ledger = Ledger(random_bytes=random_bytes)
    device = ledger.request_device(body(), HOME, T0)
    login, _ = ledger.start_login(UA, "10.0.0.2", T0 + timedelta(seconds=1))
    assert (device.code, login.code) == ("0007", "0008")  # 10007 would show 0007 again
    with pytest.raises(SeveralWaiting):
        ledger.deny(None, T0 + timedelta(seconds=2))
    ledger.deny(None, T0 + timedelta(seconds=2), code=login.code)
    assert ledger.approve(None, T0 + timedelta(seconds=3)).request_id == device.request_id


# --- logins (§5.1.3) -------------------------------------------------------------------------


def test_login_approved_on_the_meter_then_claimed_once() -> None:
    ledger = Ledger()
    request, secret = ledger.start_login(UA, HOME, T0)
    assert request.state is R.PENDING and request.secret_digest == secret_digest(secret)
    assert secret not in repr(request)
    assert ledger.poll_login(secret, T0).request.state is R.PENDING
    approved = ledger.approve(None, T0 + timedelta(seconds=5))
    assert approved.state is R.APPROVED and approved.decided_by == "meter"
    poll = ledger.poll_login(secret, T0 + timedelta(seconds=6))
    assert poll.session is not None and poll.secret is not None
    assert poll.request.state is R.CLAIMED and poll.request.grant_id == poll.session.grant_id
    assert poll.session.kind is GrantKind.SESSION
    assert poll.session.expires_at == T0 + timedelta(seconds=6, days=90)
    uuid_module.UUID(poll.session.uuid)  # a real uuid, as GET /api/token answers it
    assert poll.session.info().name == "portal: Chrome 126 on Linux"
    again = ledger.poll_login(secret, T0 + timedelta(seconds=7))
    assert again.session is None and again.secret is None  # handed out once
    assert events(ledger) == [
        "login-requested",
        "login-approved",
        "login-claimed",
        "session-started",
    ]
    grant = ledger.authenticate(poll.secret, T0 + timedelta(minutes=1))
    assert grant.grant_id == poll.session.grant_id and grant.profiles == frozenset(Profile)


def test_login_denied_is_visible_ten_minutes_then_gone() -> None:
    ledger = Ledger()
    request, secret = ledger.start_login(UA, HOME, T0)
    ledger.deny(request.request_id, T0 + timedelta(minutes=1))
    assert ledger.poll_login(secret, T0 + timedelta(minutes=2)).request.state is R.DENIED
    assert [r.state for r in ledger.visible(T0 + timedelta(minutes=10))] == [R.DENIED]
    assert ledger.visible(T0 + timedelta(minutes=11, seconds=1)) == []


def test_login_expires_after_ten_minutes_and_an_unclaimed_approval_too() -> None:
    ledger = Ledger()
    request, secret = ledger.start_login(UA, HOME, T0)
    assert ledger.poll_login(secret, T0 + timedelta(minutes=10)).request.state is R.EXPIRED
    second, secret2 = ledger.start_login(UA, HOME, T0 + timedelta(minutes=20))
    ledger.approve(second.request_id, T0 + timedelta(minutes=21))
    assert ledger.poll_login(secret2, T0 + timedelta(minutes=30)).request.state is R.EXPIRED
    assert "login-expired" in events(ledger)


def test_same_browser_asking_again_replaces_its_request() -> None:
    ledger = Ledger()
    first, secret = ledger.start_login(UA, HOME, T0)
    second, _ = ledger.start_login(UA, HOME, T0 + timedelta(seconds=1), previous_secret=secret)
    assert [r.request_id for r in ledger.pending(T0)] == [second.request_id]
    assert ledger.request(first.request_id).state is R.CANCELLED


def test_unknown_login_secrets() -> None:
    ledger = Ledger()
    for secret in (None, "", "x" * 43, "not a secret"):
        with pytest.raises(NotFound):
            ledger.poll_login(secret, T0)


def test_another_session_may_approve_a_login_but_not_an_elevation() -> None:
    ledger = Ledger()
    session_id, _ = logged_in(ledger)
    request, _ = ledger.start_login("Firefox/130 Android", "10.0.0.2", T0)
    approved = ledger.approve(request.request_id, T0, by=f"session:{session_id}")
    assert approved.decided_by == f"session:{session_id}"
    elevation = ledger.request_elevation(session_id, HOME, T0)
    with pytest.raises(BadRequest):
        ledger.approve(elevation.request_id, T0, by=f"session:{session_id}")
    with pytest.raises(BadRequest):
        ledger.deny(elevation.request_id, T0, by=f"session:{session_id}")


# --- elevation (§9.2.2) ----------------------------------------------------------------------


def test_elevation_holds_sixty_minutes() -> None:
    ledger = Ledger()
    session_id, _ = logged_in(ledger)
    ledger.take_changes()
    assert not ledger.grant(session_id).elevated(T0)
    request = ledger.request_elevation(session_id, HOME, T0)
    assert request.kind is RequestKind.ELEVATION and request.grant_id == session_id
    assert request.admin
    assert ledger.request_elevation(session_id, HOME, T0 + timedelta(seconds=3)) == request
    ledger.approve(None, T0 + timedelta(minutes=1))
    session = ledger.grant(session_id)
    assert session.elevated_until == T0 + timedelta(minutes=1) + ELEVATION_LIFETIME
    assert session.elevated(T0 + timedelta(minutes=60, seconds=59))
    assert not session.elevated(T0 + timedelta(minutes=61))
    assert events(ledger) == ["elevation-requested", "elevation-approved", "session-elevated"]
    ledger.unelevate(session_id, T0 + timedelta(minutes=2))
    assert not ledger.grant(session_id).elevated(T0 + timedelta(minutes=2))


def test_an_elevation_elevates_only_the_session_that_asked() -> None:
    """The hijacked press, for admin access: the intruder's session asked first, with the
    customer's browser name; the customer's press names their own code."""
    ledger = Ledger()
    intruder, _ = logged_in(ledger, address="10.0.0.66")
    customer, _ = logged_in(ledger)
    theirs = ledger.request_elevation(intruder, "10.0.0.66", T0)
    mine = ledger.request_elevation(customer, HOME, T0 + timedelta(seconds=1))
    with pytest.raises(SeveralWaiting):
        ledger.approve(None, T0 + timedelta(seconds=2))
    ledger.approve(None, T0 + timedelta(seconds=2), code=mine.code)
    assert ledger.grant(customer).elevated(T0 + timedelta(seconds=3))
    assert not ledger.grant(intruder).elevated(T0 + timedelta(seconds=3))
    assert ledger.request(theirs.request_id).state is R.PENDING


def test_elevation_denied_or_expired_gives_nothing() -> None:
    ledger = Ledger()
    session_id, _ = logged_in(ledger)
    request = ledger.request_elevation(session_id, HOME, T0)
    ledger.deny(request.request_id, T0)
    assert not ledger.grant(session_id).elevated(T0)
    request = ledger.request_elevation(session_id, HOME, T0 + timedelta(minutes=1))
    assert ledger.pending(T0 + timedelta(minutes=11)) == []
    assert ledger.request(request.request_id).state is R.EXPIRED


def test_ending_a_session_cancels_its_elevation_request_and_access() -> None:
    ledger = Ledger()
    session_id, _ = logged_in(ledger)
    request = ledger.request_elevation(session_id, HOME, T0)
    ledger.logout(session_id, T0)
    assert ledger.request(request.request_id).state is R.CANCELLED
    with pytest.raises(Unauthorized):
        ledger.request_elevation(session_id, HOME, T0)


# --- grants (§5.2) ---------------------------------------------------------------------------


def test_unknown_malformed_and_missing_secrets_are_unauthorized() -> None:
    ledger = Ledger()
    for secret in (None, "", "short", new_secret()):
        with pytest.raises(Unauthorized):
            ledger.authenticate(secret, T0)


def test_one_path_authenticates_tokens_and_sessions() -> None:
    ledger = Ledger()
    token, token_id = paired(ledger)
    session_id, cookie = logged_in(ledger)
    assert ledger.authenticate(token, T0).kind is GrantKind.TOKEN
    assert ledger.authenticate(cookie, T0).kind is GrantKind.SESSION
    assert ledger.authenticate(cookie, T0).token_id == f"session:{session_id}"
    assert ledger.authenticate(token, T0).token_id == token_id


def test_a_token_expires_after_90_days_unused_and_is_renewed_by_use() -> None:
    ledger = Ledger()
    secret, _ = paired(ledger)
    ledger.take_changes()
    used = T0 + timedelta(days=89)
    assert ledger.authenticate(secret, used).expires_at == used + timedelta(days=90)
    assert events(ledger) == ["token-renewed"]
    later = used + timedelta(days=89, hours=23)
    assert ledger.authenticate(secret, later).state is GrantState.ACTIVE
    with pytest.raises(Unauthorized, match="expired"):
        ledger.authenticate(secret, later + timedelta(days=90))
    assert "token-expired" in events(ledger)


@pytest.mark.parametrize("kind", list(GrantKind))
def test_renewal_is_handed_out_for_persisting_at_most_once_an_hour(kind: GrantKind) -> None:
    ledger = Ledger()
    secret = paired(ledger)[0] if kind is GrantKind.TOKEN else logged_in(ledger)[1]
    ledger.take_changes()
    renewed = []
    for minute in range(0, 181, 5):
        ledger.authenticate(secret, T0 + timedelta(minutes=minute))
        renewed += [c for c in ledger.take_changes() if c.event.value.endswith("-renewed")]
    assert [c.record.renewed_at for c in renewed] == [  # type: ignore[union-attr]
        T0 + timedelta(hours=h) for h in (1, 2, 3)
    ]
    # memory still moves the expiry on every use
    grant = ledger.authenticate(secret, T0 + timedelta(minutes=182))
    assert grant.expires_at == T0 + timedelta(days=90, minutes=182)


def test_revoke_logout_and_a_revoked_grant_stays_revoked() -> None:
    ledger = Ledger()
    secret, token_id = paired(ledger)
    first, cookie1 = logged_in(ledger)
    second, cookie2 = logged_in(ledger)
    ledger.revoke(token_id, T0)
    with pytest.raises(Unauthorized, match="revoked"):
        ledger.authenticate(secret, T0)
    with pytest.raises(NotFound):
        ledger.revoke(token_id, T0)
    ledger.logout(first, T0)
    ledger.revoke(second, T0, "by another browser")
    for cookie in (cookie1, cookie2):
        with pytest.raises(Unauthorized):
            ledger.authenticate(cookie, T0)
    assert ledger.grants(T0) == []


def test_a_new_token_of_the_same_device_revokes_the_old_one() -> None:
    ledger = Ledger()
    device = str(uuid_module.uuid4())
    old, _ = paired(ledger, device=device)
    new, _ = paired(ledger, T0 + timedelta(minutes=1), device=device)
    with pytest.raises(Unauthorized):
        ledger.authenticate(old, T0 + timedelta(minutes=2))
    ledger.authenticate(new, T0 + timedelta(minutes=2))


def test_restart_restores_records_and_reissues_a_lost_secret() -> None:
    ledger = Ledger()
    request = ledger.request_device(body(), HOME, T0)
    ledger.approve(None, T0)
    session_id, cookie = logged_in(ledger, T0)
    changes = ledger.take_changes()
    requests = {c.record.request_id: c.record for c in changes if hasattr(c.record, "code")}
    grants = {c.record.grant_id: c.record for c in changes if hasattr(c.record, "digest")}
    again = Ledger()
    again.restore(requests.values(), grants.values())  # type: ignore[arg-type]
    state = again.device_state(request.request_id, T0 + timedelta(minutes=1))
    assert state.token is not None
    assert events(again) == ["token-reissued"]
    assert again.authenticate(state.token, T0 + timedelta(minutes=2)).kind is GrantKind.TOKEN
    assert again.device_state(request.request_id, T0 + timedelta(minutes=3)).token == state.token
    assert again.authenticate(cookie, T0).grant_id == session_id


def test_set_profiles_and_revoke_all_end_everything_open() -> None:
    ledger = Ledger()
    secret, token_id = paired(ledger)
    ledger.set_profiles(token_id, frozenset({Profile.E_REALTIME}), T0)
    assert ledger.authenticate(secret, T0).profiles == {Profile.E_REALTIME}
    session_id, cookie = logged_in(ledger)
    with pytest.raises(NotFound):
        ledger.set_profiles(session_id, frozenset({Profile.P1}), T0)  # not a token
    pending_device = ledger.request_device(body(), HOME, T0)
    pending_login, _ = ledger.start_login(UA, HOME, T0)
    approved, approved_secret = ledger.start_login(UA, "10.0.0.9", T0)
    ledger.approve(approved.request_id, T0)
    ended = ledger.revoke_all(T0, "history was blocked")
    assert {g.grant_id for g in ended} == {token_id, session_id}
    assert ledger.request(pending_device.request_id).state is R.EXPIRED
    assert ledger.request(pending_login.request_id).state is R.CANCELLED
    assert ledger.poll_login(approved_secret, T0).request.state is R.CANCELLED
    for used in (secret, cookie):
        with pytest.raises(Unauthorized):
            ledger.authenticate(used, T0)


def test_prune_drops_old_records() -> None:
    ledger = Ledger()
    secret, token_id = paired(ledger)
    ledger.revoke(token_id, T0)
    ledger.take_changes()
    ledger.prune(T0 + timedelta(hours=25))
    assert sorted(events(ledger)) == ["grant-dropped", "request-dropped"]
    assert ledger.requests() == []
    with pytest.raises(Unauthorized, match="unknown"):
        ledger.authenticate(secret, T0 + timedelta(hours=25))


def test_a_rollback_undoes_everything_since_the_checkpoint() -> None:
    ledger = Ledger()
    secret, token_id = paired(ledger)
    ledger.take_changes()
    point = ledger.checkpoint()
    ledger.revoke(token_id, T0)
    ledger.request_device(body(), HOME, T0)
    ledger.rollback(point)
    assert ledger.take_changes() == []
    assert ledger.authenticate(secret, T0).state is GrantState.ACTIVE
    assert ledger.pending(T0) == []


def test_next_deadline_is_the_earliest_expiry() -> None:
    ledger = Ledger()
    assert ledger.next_deadline(T0) is None
    request = ledger.request_device(body(), HOME, T0)
    assert ledger.next_deadline(T0) == request.expires_at
    ledger.approve(None, T0 + timedelta(minutes=1))
    # the clear token is forgotten once the approved request stops answering
    tick = timedelta(microseconds=1)
    assert ledger.next_deadline(T0) == T0 + timedelta(minutes=10) + ANSWER_GRACE + tick
    ledger.expire_due(T0 + timedelta(minutes=12))
    grant = ledger.grants(T0)[0]
    later = T0 + timedelta(minutes=12)
    # the decided request is pruned after a day, before the grant's 90 days are over
    assert ledger.next_deadline(later) == T0 + KEEP_DECIDED + tick
    ledger.maintain(T0 + KEEP_DECIDED + tick)
    assert ledger.next_deadline(later) == grant.expires_at


def test_a_request_expires_at_its_deadline_and_not_a_tick_before() -> None:
    ledger = Ledger()
    request = ledger.request_device(body(), HOME, T0)
    ledger.take_changes()
    deadline = ledger.next_deadline(T0)
    assert deadline == T0 + timedelta(minutes=10)
    ledger.maintain(deadline - timedelta(microseconds=1))
    assert ledger.take_changes() == [] and ledger.request(request.request_id).state is R.PENDING
    ledger.maintain(deadline)
    assert events(ledger) == ["request-expired"]
    assert ledger.request(request.request_id).state is R.EXPIRED


def test_nothing_is_due_while_nothing_waits_or_lives() -> None:
    ledger = Ledger()
    ledger.maintain(T0)
    assert ledger.next_deadline(T0) is None
    request = ledger.request_device(body(), HOME, T0)
    ledger.deny(request.request_id, T0)
    ledger.maintain(T0 + timedelta(days=2))  # pruned: nothing is left
    assert ledger.take_changes()[-1].event is Event.REQUEST_DROPPED
    assert ledger.next_deadline(T0 + timedelta(days=2)) is None


def test_a_live_grant_is_due_for_its_renewal_every_hour() -> None:
    ledger = Ledger()
    _, token_id = paired(ledger)
    ledger.maintain(T0 + timedelta(minutes=12))  # the request stops answering
    ledger.take_changes()
    live = {token_id}
    grant = ledger.grant(token_id)
    assert ledger.next_deadline(T0, live) == T0 + RENEW_PERSIST_EVERY
    assert ledger.next_deadline(T0) == T0 + KEEP_DECIDED + timedelta(microseconds=1)
    ledger.maintain(T0 + timedelta(minutes=30), live)  # renewed in memory, not yet persisted
    assert ledger.take_changes() == []
    ledger.maintain(T0 + RENEW_PERSIST_EVERY, live)
    assert events(ledger) == ["token-renewed"]
    renewed = ledger.grant(token_id)
    assert renewed.expires_at == T0 + RENEW_PERSIST_EVERY + timedelta(days=90)
    assert renewed.expires_at > grant.expires_at
    assert ledger.next_deadline(T0, live) == T0 + 2 * RENEW_PERSIST_EVERY


@pytest.mark.parametrize("seed", range(5))
def test_maintenance_at_each_deadline_moves_it_later(seed: int) -> None:
    """An adapter that runs :meth:`Ledger.maintain` at :meth:`Ledger.next_deadline` never
    spins: after it, the next deadline is later (or there is none)."""
    ledger = Ledger(random_bytes=_seeded(seed))
    ledger.request_device(body(), HOME, T0)
    _, token_id = paired(ledger, T0 + timedelta(minutes=1), address="192.168.1.21")
    login, _ = ledger.start_login(UA, HOME, T0 + timedelta(minutes=2))
    ledger.approve(login.request_id, T0 + timedelta(minutes=3))
    other = ledger.request_device(body(), "192.168.1.22", T0 + timedelta(minutes=4))
    ledger.deny(other.request_id, T0 + timedelta(minutes=5))
    live = {token_id} if seed % 2 else set()
    now, rounds = T0 + timedelta(minutes=5), 0
    while (deadline := ledger.next_deadline(now, live)) is not None and rounds < 200:
        assert deadline > now or rounds == 0
        now = max(now, deadline)
        ledger.maintain(now, live)
        after = ledger.next_deadline(now, live)
        assert after is None or after > now, (rounds, now, after)
        rounds += 1
        if now > T0 + timedelta(days=200):
            break
    if live:
        assert ledger.grant(token_id).state is GrantState.ACTIVE  # renewed, hour by hour
    else:
        assert ledger.next_deadline(now, live) is None  # everything ended and was pruned


def _seeded(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def test_ids_are_hex_and_never_look_like_an_option() -> None:
    ledger = Ledger()
    for i in range(50):
        request = ledger.request_device(body(), f"10.0.{i}.1", T0)
        assert len(request.request_id) == 32 and int(request.request_id, 16) >= 0
        approved = ledger.approve(request.request_id, T0)
        assert approved.grant_id is not None and len(approved.grant_id) == 16
        login, _ = ledger.start_login(UA, f"10.1.{i}.1", T0)
        assert not login.request_id.startswith("-") and int(login.request_id, 16) >= 0
        ledger.deny(login.request_id, T0)


# --- helpers ---------------------------------------------------------------------------------


def test_csrf_token_belongs_to_its_session() -> None:
    ledger = Ledger()
    _, secret1 = logged_in(ledger)
    _, secret2 = logged_in(ledger)
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

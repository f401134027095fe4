"""The pairing state machine (x1p1.x1.pairing), sans I/O: time is an argument."""

from __future__ import annotations

import itertools
import uuid as uuid_module
from datetime import UTC, datetime, timedelta

import pytest

from x1p1.exceptions import BadRequest, NotFound, RateLimited, RequestNotPending, Unauthorized
from x1p1.x1.api import RequestStatus, TokenRequestBody
from x1p1.x1.pairing import (
    MAX_PENDING,
    REQUEST_TRANSITIONS,
    TOKEN_TRANSITIONS,
    Pairing,
    RequestEvent,
    TokenEvent,
    TokenStatus,
    looks_like_token,
    new_token,
    next_request_status,
    next_token_status,
    token_digest,
)
from x1p1.x1.profiles import Profile

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def body(
    uuid: str | None = None, profiles: tuple[str, ...] = ("P1",), name: str = "dev"
) -> TokenRequestBody:
    return TokenRequestBody.parse(
        {"name": name, "uuid": uuid or str(uuid_module.uuid4()), "profiles": list(profiles)}
    )


def kinds(pairing: Pairing) -> list[str]:
    return [c.kind for c in pairing.take_changes()]


# --- the tables --------------------------------------------------------------------------


def test_request_table_only_pending_moves() -> None:
    for status, event in itertools.product(RequestStatus, RequestEvent):
        if status is RequestStatus.PENDING:
            assert next_request_status(status, event) is REQUEST_TRANSITIONS[status][event]
        else:
            with pytest.raises(RequestNotPending):
                next_request_status(status, event)


def test_token_table_only_active_moves() -> None:
    assert next_token_status(TokenStatus.ACTIVE, TokenEvent.REVOKE) is TokenStatus.REVOKED
    assert next_token_status(TokenStatus.ACTIVE, TokenEvent.EXPIRE) is TokenStatus.EXPIRED
    for status in (TokenStatus.REVOKED, TokenStatus.EXPIRED):
        assert TOKEN_TRANSITIONS[status] == {}
        for event in TokenEvent:
            with pytest.raises(Unauthorized):
                next_token_status(status, event)


def test_token_format_and_digest() -> None:
    token = new_token()
    assert len(token) == 43 and looks_like_token(token)
    assert not looks_like_token(token[:-1]) and not looks_like_token(token + "A")
    assert token_digest(token) != token and len(token_digest(token)) == 64
    assert new_token() != token


# --- requests ------------------------------------------------------------------------------


def test_approve_issues_a_token_that_authenticates() -> None:
    p = Pairing()
    request = p.request(body(profiles=("P1", "E-REALTIME")), T0)
    assert kinds(p) == ["request-created"]
    state = p.state(request.request_id, T0)
    assert state.status is RequestStatus.PENDING and state.token is None
    approved, token = p.approve(None, T0 + timedelta(minutes=1))
    assert approved.status is RequestStatus.APPROVED
    assert kinds(p) == ["request-approved", "token-issued"]
    state = p.state(request.request_id, T0 + timedelta(minutes=2))
    assert state.token is not None and state.profiles == {Profile.P1, Profile.E_REALTIME}
    assert token.digest == token_digest(state.token)
    found = p.authenticate(state.token, T0 + timedelta(minutes=3))
    assert found.token_id == token.token_id


def test_approve_may_grant_other_profiles() -> None:
    p = Pairing()
    request = p.request(body(profiles=("P1", "E-HISTORIC")), T0)
    _, token = p.approve(request.request_id, T0, frozenset({Profile.P1}))
    assert token.profiles == {Profile.P1}
    with pytest.raises(BadRequest):
        p.approve(p.request(body(), T0).request_id, T0, frozenset())


def test_deny_and_decided_requests_cannot_be_decided_again() -> None:
    p = Pairing()
    request = p.request(body(), T0)
    assert p.deny(None, T0).status is RequestStatus.DENIED
    assert p.state(request.request_id, T0).status is RequestStatus.DENIED
    with pytest.raises(RequestNotPending):
        p.approve(request.request_id, T0)
    with pytest.raises(NotFound):
        p.approve(None, T0)  # nothing pending
    with pytest.raises(NotFound):
        p.deny("no-such-id", T0)


def test_fifo_oldest_first() -> None:
    p = Pairing()
    ids = [p.request(body(name=f"d{i}"), T0 + timedelta(seconds=i)).request_id for i in range(5)]
    assert [r.request_id for r in p.pending(T0 + timedelta(seconds=10))] == ids
    p.approve(None, T0 + timedelta(seconds=11))
    p.deny(None, T0 + timedelta(seconds=12))
    assert [r.request_id for r in p.pending(T0 + timedelta(seconds=13))] == ids[2:]
    assert p.state(ids[0], T0 + timedelta(seconds=13)).status is RequestStatus.APPROVED
    assert p.state(ids[1], T0 + timedelta(seconds=13)).status is RequestStatus.DENIED


def test_expiry_after_ten_minutes_and_the_id_stops_answering() -> None:
    p = Pairing()
    request = p.request(body(), T0)
    p.take_changes()
    just_before = T0 + timedelta(minutes=10) - timedelta(microseconds=1)
    assert p.state(request.request_id, just_before).status is RequestStatus.PENDING
    at = T0 + timedelta(minutes=10)
    assert p.state(request.request_id, at).status is RequestStatus.EXPIRED
    changes = p.take_changes()
    assert [c.kind for c in changes] == ["request-expired"]
    assert changes[0].record.decided_at == at  # type: ignore[union-attr]
    with pytest.raises(RequestNotPending):
        p.approve(request.request_id, at)
    with pytest.raises(NotFound):
        p.state(request.request_id, at + timedelta(seconds=1))
    assert p.pending(at) == []


def test_approved_token_is_fetchable_only_while_the_request_answers() -> None:
    p = Pairing()
    request = p.request(body(), T0)
    p.approve(None, T0 + timedelta(minutes=9))
    assert p.state(request.request_id, T0 + timedelta(minutes=10)).token
    with pytest.raises(NotFound):
        p.state(request.request_id, T0 + timedelta(minutes=10, seconds=1))


def test_at_most_sixteen_pending() -> None:
    p = Pairing()
    for i in range(MAX_PENDING):
        p.request(body(), T0 + timedelta(seconds=i))
    with pytest.raises(RateLimited) as caught:
        p.request(body(), T0 + timedelta(seconds=30))
    assert caught.value.retry_after == 600 - 30  # until the oldest expires
    assert caught.value.headers() == {"Retry-After": "570"}
    p.deny(None, T0 + timedelta(seconds=31))
    p.request(body(), T0 + timedelta(seconds=32))


def test_a_new_request_of_a_device_replaces_its_pending_one() -> None:
    p = Pairing()
    device = str(uuid_module.uuid4())
    first = p.request(body(device), T0)
    second = p.request(body(device), T0 + timedelta(seconds=5))
    assert [r.request_id for r in p.pending(T0 + timedelta(seconds=6))] == [second.request_id]
    assert p.state(first.request_id, T0 + timedelta(seconds=6)).status is RequestStatus.EXPIRED


def test_three_denials_within_an_hour_throttle_for_an_hour() -> None:
    p = Pairing()
    device = str(uuid_module.uuid4())
    at = T0
    for _ in range(3):
        p.request(body(device), at)
        p.deny(None, at + timedelta(minutes=1))
        at += timedelta(minutes=20)
    third_denial = T0 + timedelta(minutes=41)
    with pytest.raises(RateLimited) as caught:
        p.request(body(device), at)
    assert caught.value.retry_after == int((third_denial + timedelta(hours=1) - at).total_seconds())
    p.request(body(), at)  # other devices are not throttled
    with pytest.raises(RateLimited):
        p.request(body(device), third_denial + timedelta(minutes=59, seconds=59))
    p.request(body(device), third_denial + timedelta(hours=1))


def test_denials_spread_over_more_than_an_hour_do_not_throttle() -> None:
    p = Pairing()
    device = str(uuid_module.uuid4())
    for minutes in (0, 31, 62):
        p.request(body(device), T0 + timedelta(minutes=minutes))
        p.deny(None, T0 + timedelta(minutes=minutes))
    p.request(body(device), T0 + timedelta(minutes=63))


def test_expiries_do_not_count_as_denials() -> None:
    p = Pairing()
    device = str(uuid_module.uuid4())
    for i in range(4):
        p.request(body(device), T0 + timedelta(minutes=11 * i))
    p.request(body(device), T0 + timedelta(minutes=45))


# --- tokens --------------------------------------------------------------------------------


def _paired(p: Pairing, at: datetime = T0, device: str | None = None) -> tuple[str, str]:
    request = p.request(body(device), at)
    _, token = p.approve(request.request_id, at)
    secret = p.state(request.request_id, at).token
    assert secret is not None
    return secret, token.token_id


def test_unknown_malformed_and_missing_tokens_are_unauthorized() -> None:
    p = Pairing()
    for secret in (None, "", "short", new_token()):
        with pytest.raises(Unauthorized):
            p.authenticate(secret, T0)


def test_token_expires_after_90_days_unused_and_is_renewed_by_use() -> None:
    p = Pairing()
    secret, token_id = _paired(p)
    p.take_changes()
    used = T0 + timedelta(days=89)
    assert p.authenticate(secret, used).expires_at == used + timedelta(days=90)
    assert kinds(p) == ["token-renewed"]
    assert p.authenticate(secret, used + timedelta(days=89, hours=23)).status is TokenStatus.ACTIVE
    with pytest.raises(Unauthorized, match="expired"):
        p.authenticate(secret, used + timedelta(days=89, hours=23) + timedelta(days=90))
    assert "token-expired" in kinds(p)


def test_renewal_is_emitted_for_persisting_at_most_once_an_hour() -> None:
    p = Pairing()
    secret, _ = _paired(p)
    p.take_changes()
    renewed = []
    for minute in range(0, 181, 5):
        p.authenticate(secret, T0 + timedelta(minutes=minute))
        renewed += [c for c in p.take_changes() if c.kind == "token-renewed"]
    assert [c.record.renewed_at for c in renewed] == [  # type: ignore[union-attr]
        T0 + timedelta(hours=h) for h in (1, 2, 3)
    ]
    # memory still moves the expiry on every use
    assert p.authenticate(secret, T0 + timedelta(minutes=182)).expires_at == T0 + timedelta(
        days=90, minutes=182
    )


def test_revoke_and_unpair() -> None:
    p = Pairing()
    secret, token_id = _paired(p)
    p.revoke(token_id, T0)
    with pytest.raises(Unauthorized, match="revoked"):
        p.authenticate(secret, T0)
    with pytest.raises(NotFound):
        p.revoke(token_id, T0)
    assert p.tokens(T0) == []


def test_a_new_token_of_the_same_device_revokes_the_old_one() -> None:
    p = Pairing()
    device = str(uuid_module.uuid4())
    old, _ = _paired(p, device=device)
    new, _ = _paired(p, T0 + timedelta(minutes=1), device=device)
    with pytest.raises(Unauthorized):
        p.authenticate(old, T0 + timedelta(minutes=2))
    p.authenticate(new, T0 + timedelta(minutes=2))


def test_restart_restores_records_and_reissues_a_lost_secret() -> None:
    p = Pairing()
    request = p.request(body(), T0)
    _, token = p.approve(None, T0)
    changes = p.take_changes()
    requests = [c.record for c in changes if c.kind.startswith("request")]
    tokens = [c.record for c in changes if c.kind.startswith("token")]
    again = Pairing()
    again.restore([requests[-1]], [tokens[-1]])  # type: ignore[list-item]
    state = again.state(request.request_id, T0 + timedelta(minutes=1))
    assert state.token is not None
    assert [c.kind for c in again.take_changes()] == ["token-reissued"]
    assert again.authenticate(state.token, T0 + timedelta(minutes=2)).token_id == token.token_id
    # the same secret on every poll after that
    assert again.state(request.request_id, T0 + timedelta(minutes=3)).token == state.token


def test_set_profiles_and_revoke_all() -> None:
    p = Pairing()
    secret, token_id = _paired(p)
    p.set_profiles(token_id, frozenset({Profile.E_REALTIME}), T0)
    assert p.authenticate(secret, T0).profiles == {Profile.E_REALTIME}
    _paired(p)
    assert len(p.revoke_all(T0, "history blocked")) == 2
    assert p.tokens(T0) == []


def test_prune_drops_old_records() -> None:
    p = Pairing()
    secret, token_id = _paired(p)
    p.revoke(token_id, T0)
    p.take_changes()
    p.prune(T0 + timedelta(hours=25))
    assert sorted(kinds(p)) == ["request-dropped", "token-dropped"]
    assert p.requests() == []
    with pytest.raises(Unauthorized, match="unknown"):
        p.authenticate(secret, T0 + timedelta(hours=25))


def test_ids_are_hex_and_never_look_like_an_option() -> None:
    p = Pairing()
    for _ in range(50):
        request = p.request(body(), T0)
        assert len(request.request_id) == 32 and int(request.request_id, 16) >= 0
        _, token = p.approve(request.request_id, T0)
        assert len(token.token_id) == 16 and int(token.token_id, 16) >= 0

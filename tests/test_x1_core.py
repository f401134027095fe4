"""The OBIS registry (X1 Tables 4–6, PQ), profiles (Table 3) and the shared API models."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.p1_corpus import SPEC_EXAMPLE
from x1p1.exceptions import BadRequest
from x1p1.p1 import Telegram
from x1p1.x1.api import (
    RequestStatus,
    TokenInfo,
    TokenRequestBody,
    TokenRequestState,
    bearer_token,
    format_time,
    parse_interval,
    parse_list,
    parse_time,
    power_failure_json,
)
from x1p1.x1.obis import BY_CODE, OBJECTS, P1_ORDER, Meter, lookup, objects_for
from x1p1.x1.profiles import Profile, parse_profiles


def test_every_p1_object_of_the_spec_example_is_registered() -> None:
    for obj in Telegram.parse(SPEC_EXAMPLE):
        assert lookup(obj.obis).obj.p1_code.replace("-n:", "-1:") == obj.obis


def test_registry_covers_the_x1_tables() -> None:
    table4 = [o for o in OBJECTS if "Table 4" in o.source]
    assert len(table4) == 20  # Table 4 lists 20 rows
    assert {o.code for o in OBJECTS if o.meter is Meter.GAS} == {
        "0-n:24.1.0.255",
        "0-n:96.1.0.255",
        "0-n:24.2.1.255",
    }
    pq = [o for o in OBJECTS if Profile.PQ_REALTIME in o.profiles]
    assert len(pq) == 10  # §6.2.4 lists 10 rows
    assert set(P1_ORDER) == set(BY_CODE)
    assert BY_CODE["1-0:1.8.1.255"].unit == "kWh" and BY_CODE["1-0:1.8.1.255"].decimals == 3


def test_profiles_per_category_of_6_1() -> None:
    registers = {"1-0:1.8.1.255", "1-0:1.8.2.255", "1-0:2.8.1.255", "1-0:2.8.2.255"}
    historic = {o.code for o in objects_for({Profile.E_HISTORIC}) if o.historic}
    assert historic == registers
    realtime = {o.code for o in objects_for({Profile.E_REALTIME})}
    assert registers | {"1-0:1.7.0.255", "1-0:32.7.0.255"} <= realtime
    assert "1-0:1.7.0.255" not in {o.code for o in objects_for({Profile.E_HISTORIC})}
    gas = {o.code for o in objects_for({Profile.G_HISTORIC}) if o.historic}
    assert gas == {"0-n:24.2.1.255"}
    assert objects_for({Profile.P1}) == []
    assert all(Profile.P1 in o.profiles for o in OBJECTS)


def test_lookup_forms_and_errors() -> None:
    assert lookup("1-0:1.8.1").code == "1-0:1.8.1.255"
    assert lookup("1-0:1.8.1.255").code == "1-0:1.8.1.255"
    ref = lookup("0-2:24.2.1.255")
    assert ref.channel == 2 and ref.code == "0-2:24.2.1.255"
    for bad in ["1-0:1.8.9", "nonsense", "1-0:1.8.1.254", "0-7:24.2.1", ""]:
        with pytest.raises(BadRequest, match="obis"):
            lookup(bad)


def test_parse_profiles() -> None:
    assert parse_profiles(["P1", "E-HISTORIC"]) == {Profile.P1, Profile.E_HISTORIC}
    for bad in (["p1"], [], [3], ["X-REALTIME"]):
        with pytest.raises(BadRequest, match="profiles"):
            parse_profiles(bad)


def test_token_request_body() -> None:
    body = TokenRequestBody.parse(
        {"name": "x1p1 on pi", "uuid": "0B5C2F0E-0000-4000-8000-000000000001", "profiles": ["P1"]}
    )
    assert body.uuid == "0b5c2f0e-0000-4000-8000-000000000001"
    assert TokenRequestBody.parse(body.to_json()) == body
    good = {"name": "n", "uuid": body.uuid, "profiles": ["P1"]}
    cases = [
        ([], "body"),
        ({**good, "extra": 1}, "unknown field"),
        ({**good, "name": ""}, "name"),
        ({**good, "name": "x" * 65}, "name"),
        ({**good, "name": "a\nb"}, "name"),
        ({**good, "uuid": "nope"}, "uuid"),
        ({**good, "uuid": 5}, "uuid"),
        ({**good, "profiles": "P1"}, "profiles"),
        ({k: v for k, v in good.items() if k != "name"}, "name: missing"),
    ]
    for case, message in cases:
        with pytest.raises(BadRequest, match=message):
            TokenRequestBody.parse(case)


def test_request_state_and_token_info_round_trip() -> None:
    when = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    pending = TokenRequestState("abc", RequestStatus.PENDING, when)
    assert pending.to_json() == {
        "request_id": "abc",
        "status": "pending",
        "expires_at": "2026-11-24T12:00:00Z",
    }
    assert TokenRequestState.parse(pending.to_json()) == pending
    p1 = frozenset({Profile.P1})
    approved = TokenRequestState("abc", RequestStatus.APPROVED, when, "tok", p1)
    assert TokenRequestState.parse(approved.to_json()) == approved
    with pytest.raises(BadRequest, match="token"):
        TokenRequestState.parse({**approved.to_json(), "token": None})
    info = TokenInfo("n", "u", frozenset({Profile.P1}), when)
    assert TokenInfo.parse(info.to_json()) == info


def test_parameters() -> None:
    assert parse_interval({}) == 1 and parse_interval({"interval": "5"}) == 5
    for bad in ["0", "-1", "1.5", "x", "3601", ""]:
        with pytest.raises(BadRequest, match="interval"):
            parse_interval({"interval": bad})
    assert parse_list({"obis": "a, b"}, "obis") == ["a", "b"]
    for bad in [{}, {"obis": ""}, {"obis": "a,,b"}]:
        with pytest.raises(BadRequest, match="obis"):
            parse_list(bad, "obis")
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None
    assert bearer_token("Bearer ") is None


def test_times() -> None:
    t = parse_time("2026-11-24T13:00:00+01:00", "from")
    assert format_time(t) == "2026-11-24T12:00:00Z"
    for bad in ["2026-11-24", "2026-11-24T12:00:00", "yesterday", 5, "2026-13-24T12:00:00Z"]:
        with pytest.raises(BadRequest, match="from"):
            parse_time(bad, "from")
    # RFC 3339 §5.6: "T" and "Z" may be lower case
    for lower in ["2026-11-24t12:00:00z", "2026-11-24t13:00:00+01:00", "2026-11-24T12:00:00z"]:
        assert format_time(parse_time(lower, "from")) == "2026-11-24T12:00:00Z"


def test_power_failure_entry() -> None:
    """x1-api.md: the power-failure log is a list of {t, duration_s} (§6.2.4)."""
    end = parse_time("2026-01-05T15:30:15+01:00", "t")
    assert power_failure_json(end, 240) == {"t": "2026-01-05T14:30:15Z", "duration_s": 240}

"""The meter's button on a hostile home network (X1 §5.1.3–§5.1.5, §9.2.2).

A second host on the home network is a client bound to 127.0.0.2 (the customer's own
is 127.0.0.1). It does what an intruder would: queue its own request first, with the
customer's device or browser name copied, hoping for the customer's press; fill the
queues; read request ids from a portal session without admin access."""

from __future__ import annotations

import re
import uuid as uuid_module
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from gateway_fixture import RunningGateway, running_gateway
from test_portal_http import UA, Client

from x1p1.cli import main
from x1p1.exceptions import SeveralWaiting

INTRUDER = "127.0.0.2"


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path / "gw") as gateway:
        yield gateway


def meter(gw: RunningGateway, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--state-dir", str(gw.state_dir)])
    return result.exit_code, result.output


# --- the hijacked press ----------------------------------------------------------------------


def test_the_hijacked_press_for_tokens(gw: RunningGateway) -> None:
    name = "x1p1 on raspberrypi"
    theirs = gw.token_request(["P1", "E-REALTIME", "E-HISTORIC"], name=name, source=INTRUDER)
    mine = gw.token_request(["P1"], name=name)
    assert theirs.json["code"] != mine.json["code"]
    # the customer presses the button without naming a request: nobody gets a token
    code, out = meter(gw, "meter", "approve")
    assert code == 2 and "--code" in out and mine.json["code"] in out
    for reply in (theirs, mine):
        state = gw.request("GET", f"/api/tokens/requests/{reply.json['request_id']}").json
        assert state["status"] == "pending" and "token" not in state
    # the customer reads the code `x1p1 pair` shows and approves that one
    code, out = meter(gw, "meter", "approve", "--code", mine.json["code"])
    assert code == 0
    granted = gw.request("GET", f"/api/tokens/requests/{mine.json['request_id']}").json
    assert granted["status"] == "approved" and granted["profiles"] == ["P1"]
    left = gw.request("GET", f"/api/tokens/requests/{theirs.json['request_id']}").json
    assert left["status"] == "pending" and "token" not in left
    # the meter approves as asked (§5.1.5): no way to hand out other profiles
    with pytest.raises(Exception, match="as asked"):
        gw.control.call("approve", id=theirs.json["request_id"], profiles=["P1"])


def test_the_hijacked_press_for_logins(gw: RunningGateway) -> None:
    intruder = Client(gw, user_agent=UA, source=INTRUDER)  # the customer's browser name
    assert intruder.post("/login").status == 303
    customer = Client(gw)
    assert customer.post("/login").status == 303
    page = customer.get("/login").text
    found = re.search(r'<p class="code"[^>]*>(\d{4})</p>', page)
    assert found, "the waiting page shows the code to look for on the display"
    with pytest.raises(SeveralWaiting):
        gw.control.approve()
    code, out = meter(gw, "meter", "approve")
    assert code == 2 and found.group(1) in out
    gw.control.approve(code=found.group(1))
    assert customer.get("/login/status").status == 200 and "__Host-x1p1-session" in customer.jar
    assert intruder.get("/login/status").status == 200
    assert "__Host-x1p1-session" not in intruder.jar
    assert intruder.get("/").status == 303  # still on the login page


def test_the_hijacked_press_for_elevations(gw: RunningGateway) -> None:
    customer = Client(gw)
    customer.log_in()
    intruder = Client(gw, user_agent=UA, source=INTRUDER)
    assert intruder.post("/login").status == 303
    gw.control.approve()  # say the customer let it in once, by mistake
    intruder.get("/login/status")
    assert intruder.post("/admin/elevate", {"csrf": intruder.csrf()}).status == 303
    assert customer.post("/admin/elevate", {"csrf": customer.csrf()}).status == 303
    waiting = gw.control.requests()
    assert [r["kind"] for r in waiting] == ["elevation", "elevation"]
    assert waiting[0]["address"] == INTRUDER and waiting[1]["address"] == "127.0.0.1"
    mine = re.search(r'class="waiting">[^<]*?(\d{4})', customer.get("/devices").text)
    assert mine, "the admin panel shows the code to look for on the display"
    with pytest.raises(SeveralWaiting):
        gw.control.approve()
    gw.control.approve(code=mine.group(1))
    blocked = customer.post("/admin/block-history", {"csrf": customer.csrf(), "confirm": "no"})
    assert blocked.status == 400  # elevated: the form is checked, not refused
    refused = intruder.post("/admin/block-history", {"csrf": intruder.csrf(), "confirm": "yes"})
    assert refused.status == 403


# --- the filled queues -----------------------------------------------------------------------


def test_one_host_cannot_fill_the_queues(gw: RunningGateway) -> None:
    for _ in range(20):
        assert gw.token_request(["P1"], name="spam", source=INTRUDER).status == 202
        assert Client(gw, source=INTRUDER).post("/login").status == 303
    waiting = gw.control.requests()
    assert len(waiting) == 4 and {r["address"] for r in waiting} == {INTRUDER}
    # the customer still pairs and logs in, and approves by code
    asked = gw.token_request(["P1"], name="dongle", uuid=str(uuid_module.uuid4())).json
    gw.control.approve(code=asked["code"])
    state = gw.request("GET", f"/api/tokens/requests/{asked['request_id']}").json
    assert state["status"] == "approved"
    customer = Client(gw)
    assert customer.post("/login").status == 303
    [login] = [
        r for r in gw.control.requests() if r["kind"] == "login" and r["address"] == "127.0.0.1"
    ]
    gw.control.approve(code=login["code"])
    assert customer.get("/login/status").status == 200 and "__Host-x1p1-session" in customer.jar


def test_eight_hosts_cannot_lock_the_others_out(gw: RunningGateway) -> None:
    """Eight hosts (127.0.1.1–8) with two requests each fill the 16 places of each kind;
    the customer's pairing and login still get in, each in place of the oldest request
    of a host that holds two (docs/reliability.md)."""
    hosts = [f"127.0.1.{n}" for n in range(1, 9)]
    for host in hosts * 2:
        assert gw.token_request(["P1"], name="spam", source=host).status == 202
        assert Client(gw, source=host).post("/login").status == 303
    waiting = gw.control.requests()
    assert len(waiting) == 32 and {r["address"] for r in waiting} == set(hosts)
    asked = gw.token_request(["P1"], name="dongle")
    assert asked.status == 202, asked.body
    customer = Client(gw)
    assert customer.post("/login").status == 303
    waiting = gw.control.requests()
    assert len(waiting) == 32
    assert sum(r["address"] == hosts[0] for r in waiting) == 2  # one of each kind gave way
    gw.control.approve(code=asked.json["code"])
    state = gw.request("GET", f"/api/tokens/requests/{asked.json['request_id']}").json
    assert state["status"] == "approved"
    [login] = [r for r in waiting if r["kind"] == "login" and r["address"] == "127.0.0.1"]
    gw.control.approve(code=login["code"])
    assert customer.get("/login/status").status == 200 and "__Host-x1p1-session" in customer.jar


# --- the stolen token --------------------------------------------------------------------------


def test_request_ids_reach_admin_sessions_only(gw: RunningGateway) -> None:
    asked = gw.token_request(["P1"], name="dongle").json
    request_id = asked["request_id"]
    other = Client(gw, source=INTRUDER)
    other.log_in()
    page = other.get("/devices").text
    assert asked["code"] in page and "dongle" in page
    assert request_id not in page
    assert request_id not in other.get("/portal/status").text
    # once it has admin access (confirmed on the meter), the ids are there to act on
    other.elevate()
    assert request_id in other.get("/devices").text

"""mDNS on both sides (X1 §4.3.3): the gateway's advertiser and the converter's discovery.

Unit tests check names, configuration, merging and the probe's conflict and tie-break
rules (RFC 6762 §8.1–§8.2) on crafted packets. The rest run real advertisers and real
browsers in network namespaces joined by a veth pair or a bridge (tests/netns.py): each
gateway is its own process, as on a real network. They skip, saying why, without root.
Nothing waits a fixed time for a result: each polls its condition with a generous bound.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from zeroconf import IPVersion
from zeroconf._dns import DNSAddress, DNSQuestion, DNSRecord, DNSService
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.asyncio import AsyncZeroconf

from tests.netns import (
    Host,
    Segment,
    read_json,
    read_line,
    require_netns,
    segment_factory,  # noqa: F401  (a fixture)
    stop,
)
from x1p1.converter.discovery import (
    DiscoveredGateway,
    discover,
    find_gateway,
    host_name_candidate,
    mdns_host_names,
)
from x1p1.exceptions import ConfigError, DiscoveryError, MdnsError
from x1p1.gateway.mdns import MdnsAdvertiser, _Prober, _sort_key

X1P1 = str(Path(sys.executable).with_name("x1p1"))
BOUND = 45.0  # upper bound for any network condition; normally met in 1–3 s

# A gateway's mDNS side on its own, as `x1p1 gateway serve` runs it: one JSON line when
# ready, one per rename, and {"closed"} after stdin closes and the goodbyes went out.
# With --wait-go it says {"ready"} first, starts on a line on stdin, and probes without
# the random start delay.
ADVERTISER = r"""
import asyncio, json, random, sys
from x1p1.gateway.mdns import MdnsAdvertiser

class NoDelay(random.Random):  # probes at once, to make two gateways probe together
    def uniform(self, a, b):
        return a

def say(**fields):
    print(json.dumps(fields), flush=True)

async def main(port, serial, address, wait_go):
    loop = asyncio.get_running_loop()
    if wait_go:
        say(ready=True)
        await loop.run_in_executor(None, sys.stdin.readline)
    adv = MdnsAdvertiser(
        port=port, serial=serial, addresses=[address],
        on_rename=lambda name: say(renamed=name),
        rng=NoDelay() if wait_go else None,
    )
    started = loop.time()
    name = await adv.start()
    say(host_name=name, service_name=adv.service_name, seconds=loop.time() - started)
    await loop.run_in_executor(None, sys.stdin.read)
    await adv.close()
    say(closed=True)

asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], "--wait-go" in sys.argv))
"""

# A host that answers for X1-interface-2.local but whose X1 service record is gone.
HOST_ONLY = r"""
import asyncio, sys
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

async def main(address):
    zc = AsyncZeroconf(interfaces=[address])
    info = AsyncServiceInfo(
        "_x1p1-other._tcp.local.", "other._x1p1-other._tcp.local.", port=9,
        server="X1-interface-2.local.", parsed_addresses=[address],
    )
    await zc.async_register_service(info)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await zc.async_close()

asyncio.run(main(sys.argv[1]))
"""


def start_advertiser(
    host: Host, port: int, serial: str, *, wait_go: bool = False
) -> subprocess.Popen[str]:
    args = [str(port), serial, host.address] + (["--wait-go"] if wait_go else [])
    return host.python(ADVERTISER, *args)


def poll(
    host: Host,
    attempt: Callable[[], Awaitable[list[DiscoveredGateway]]],
    done: Callable[[list[DiscoveredGateway]], bool],
    bound: float = BOUND,
) -> list[DiscoveredGateway]:
    """Run ``attempt`` in ``host``'s namespace until ``done(result)``, at most ``bound`` s."""

    async def loop() -> list[DiscoveredGateway]:
        while True:
            found = await attempt()
            if done(found):
                return found

    return host.run_async(loop, timeout=bound)


# -- units ------------------------------------------------------------------------------


def test_only_local_names_are_asked_of_mdns() -> None:
    names = ["X1-interface.local", "X1-interface-2.local.", "127.0.0.1", "::1", "gw.example.nl"]
    assert mdns_host_names(names) == ["X1-interface.local", "X1-interface-2.local."]


def test_discover_by_an_address_asks_mdns_nothing_and_leaves_no_failed_task() -> None:
    """A pairing made by address (no serial) is looked up by name; an address is no mDNS
    name, so nothing is asked and no task fails unseen (zeroconf refuses such a name)."""
    failures: list[dict[str, Any]] = []

    async def look() -> list[Any]:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: failures.append(ctx))
        zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        try:
            return await discover(0.3, zc, host_names=["127.0.0.1"])
        finally:
            await zc.async_close()

    assert asyncio.run(look()) == []
    assert failures == []


def test_host_name_candidates_follow_the_standard() -> None:
    assert host_name_candidate("X1-interface", 0) == "X1-interface.local"
    assert host_name_candidate("X1-interface", 1) == "X1-interface-1.local"
    assert host_name_candidate("X1-interface", 12) == "X1-interface-12.local"
    with pytest.raises(ValueError):
        host_name_candidate("X1-interface", -1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_name": "-X1"},
        {"base_name": "X1_interface"},
        {"base_name": "X1.interface"},
        {"base_name": "x" * 60},
        {"base_name": ""},
        {"port": 0},
        {"port": 70000},
        {"serial": ""},
        {"serial": "E\n1"},
        {"addresses": ["fe80::1"]},
        {"addresses": ["10.0.0.300"]},
    ],
)
def test_advertiser_refuses_bad_configuration(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"port": 8443, "serial": "E0001", **kwargs}
    with pytest.raises(ConfigError):
        MdnsAdvertiser(**args)


def test_advertiser_takes_a_base_name_with_or_without_local() -> None:
    assert MdnsAdvertiser(port=1, serial="E", base_name="meter-7.local").base_name == "meter-7"
    assert MdnsAdvertiser(port=1, serial="E", base_name="meter-7").base_name == "meter-7"


def test_advertiser_has_no_name_before_start() -> None:
    with pytest.raises(MdnsError):
        _ = MdnsAdvertiser(port=8443, serial="E0001").claimed_host_name


def test_discovered_gateways_merge_by_host_name() -> None:
    by_name = DiscoveredGateway("X1-interface-1.local", ("10.0.0.5",), 443)
    by_service = DiscoveredGateway(
        "X1-interface-1.local",
        ("10.0.0.6",),
        8443,
        serial="E0002",
        version="6.0.0",
        service_name="X1-interface-1._dsmr-x1-interface._tcp.local.",
    )
    for merged in (by_name.merge(by_service), by_service.merge(by_name)):
        assert merged.port == 8443 and merged.serial == "E0002"
        assert merged.service_name == by_service.service_name
        assert set(merged.addresses) == {"10.0.0.5", "10.0.0.6"}
    assert by_service.merge(by_name).addresses == ("10.0.0.6", "10.0.0.5")
    assert by_service.to_json() == {
        "host_name": "X1-interface-1.local",
        "addresses": ["10.0.0.6"],
        "port": 8443,
        "serial": "E0002",
        "api": "/api",
        "version": "6.0.0",
        "service_name": "X1-interface-1._dsmr-x1-interface._tcp.local.",
    }
    assert json.loads(json.dumps(by_name.to_json()))["serial"] is None


def test_discovery_does_not_import_the_gateway() -> None:
    # The daemon's install has no aiohttp or cryptography (architecture.md, Dependencies).
    code = (
        "import sys, x1p1.converter.discovery\n"
        "bad = [m for m in sys.modules if m.startswith(('x1p1.gateway', 'aiohttp', "
        "'cryptography'))]\n"
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# Probe rules on crafted packets: nothing is sent, datagrams are fed to the prober.

HOST = "X1-interface.local."
INSTANCE = "X1-interface._dsmr-x1-interface._tcp.local."


def a_record(address: bytes, ttl: int = 120, name: str = HOST) -> DNSAddress:
    return DNSAddress(name, 1, 1, ttl, address)


def proposal(address: bytes, port: int = 8443) -> list[DNSRecord]:
    return [a_record(address), DNSService(INSTANCE, 33, 1, 4500, 0, 0, port, HOST)]


def response(*records: DNSRecord) -> bytes:
    out = DNSOutgoing(0x8400, multicast=True)
    for record in records:
        out.add_answer_at_time(record, 0)
    return out.packets()[0]


def probe_packet(records: list[DNSRecord]) -> bytes:
    out = DNSOutgoing(0, multicast=True)
    for name in dict.fromkeys(r.name for r in records):
        out.add_question(DNSQuestion(name, 255, 1))
    out.authorities.extend(records)  # type: ignore[arg-type]
    return out.packets()[0]


def probing(records: list[DNSRecord]) -> _Prober:
    """A prober in the middle of probing for ``records`` (as probe() sets it up)."""
    prober = _Prober(random.Random(1))
    prober._mine = {
        name: sorted(_sort_key(r) for r in records if r.name.lower() == name)
        for name in {r.name.lower() for r in records}
    }
    return prober


def feed(prober: _Prober, packet: bytes, source: str = "10.77.0.9") -> None:
    prober.datagram_received(packet, (source, 5353))


MINE = proposal(bytes([10, 77, 0, 1]))


def test_probe_sees_an_answer_with_other_data_as_taken() -> None:
    prober = probing(MINE)
    feed(prober, response(a_record(bytes([10, 77, 0, 2]))))
    assert prober._conflict == HOST.lower()


def test_probe_sees_another_port_for_the_instance_as_taken() -> None:
    prober = probing(MINE)
    feed(prober, response(DNSService(INSTANCE, 33, 1, 4500, 0, 0, 9999, HOST)))
    assert prober._conflict == INSTANCE.lower()


@pytest.mark.parametrize(
    "packet",
    [
        response(a_record(bytes([10, 77, 0, 1]))),  # our own data: shared, no conflict
        response(a_record(bytes([10, 77, 0, 2]), ttl=0)),  # a goodbye: the name is free
        response(a_record(bytes([10, 77, 0, 2]), name="X1-interface-1.local.")),
        probe_packet(MINE),  # our data in someone's probe
    ],
)
def test_probe_ignores_what_is_no_conflict(packet: bytes) -> None:
    prober = probing(MINE)
    feed(prober, packet)
    assert prober._conflict is None and not prober._lost


def test_probe_ignores_its_own_looped_back_probe() -> None:
    prober = probing(MINE)
    mine = probe_packet(proposal(bytes([10, 77, 0, 1]), port=1))
    prober._sent.add(mine)
    feed(prober, mine, source="10.77.0.1")
    assert prober._conflict is None and not prober._lost


def test_simultaneous_probe_lexicographically_later_data_wins() -> None:
    # RFC 6762 §8.2: compare the proposed records; the later data wins, the other defers.
    prober = probing(MINE)
    feed(prober, probe_packet(proposal(bytes([10, 77, 0, 0]))))
    assert not prober._lost
    feed(prober, probe_packet(proposal(bytes([10, 77, 0, 2]))))
    assert prober._lost


def test_simultaneous_probe_same_address_other_port_is_settled_by_the_srv() -> None:
    prober = probing(MINE)
    feed(prober, probe_packet(proposal(bytes([10, 77, 0, 1]), port=8442)))
    assert not prober._lost
    feed(prober, probe_packet(proposal(bytes([10, 77, 0, 1]), port=8444)))
    assert prober._lost


def test_probe_ignores_garbage() -> None:
    prober = probing(MINE)
    for junk in (b"", b"\x00" * 5, b"\xff" * 64):
        feed(prober, junk)
    assert prober._conflict is None and not prober._lost


# -- across network namespaces ------------------------------------------------------------


def test_discover_finds_a_gateway_and_loses_it_after_goodbye(
    segment_factory: Callable[..., Segment],  # noqa: F811
) -> None:
    segment = segment_factory(["a", "b"])
    gateway = start_advertiser(segment["a"], 8443, "E0000000000000001")
    claimed = read_json(gateway, BOUND)
    assert claimed["host_name"] == "X1-interface.local"
    assert claimed["service_name"] == "X1-interface._dsmr-x1-interface._tcp.local."

    async def scenario() -> tuple[list[DiscoveredGateway], list[DiscoveredGateway]]:
        async with AsyncZeroconf(ip_version=IPVersion.V4Only) as zc:
            while not (seen := await discover(2.0, zc)):
                pass
            assert gateway.stdin is not None
            gateway.stdin.close()  # the advertiser closes: goodbye packets (TTL 0)
            assert (await asyncio.to_thread(read_json, gateway, BOUND)) == {"closed": True}
            # Without the goodbye the cache would keep the records for their TTL (75 min).
            while after := await discover(1.0, zc):
                pass
            return seen, after

    seen, after = segment["b"].run_async(scenario, timeout=BOUND)
    assert [g.to_json() for g in seen] == [
        {
            "host_name": "X1-interface.local",
            "addresses": [segment["a"].address],
            "port": 8443,
            "serial": "E0000000000000001",
            "api": "/api",
            "version": "6.0.0",
            "service_name": "X1-interface._dsmr-x1-interface._tcp.local.",
        }
    ]
    assert after == []


@pytest.fixture(scope="module")
def two_gateways() -> Iterator[tuple[Segment, dict[str, Any]]]:
    """A bridge with gateway A (E0001), browser B and gateway C (E0002) started after A."""
    require_netns()
    with Segment(["a", "b", "c"]) as segment:
        first = start_advertiser(segment["a"], 8443, "E0001")
        claims = {"a": read_json(first, BOUND)}
        second = start_advertiser(segment["c"], 8444, "E0002")
        claims["c"] = read_json(second, BOUND)
        try:
            yield segment, claims
        finally:
            stop(first)
            stop(second)


def test_second_gateway_claims_the_next_host_name(
    two_gateways: tuple[Segment, dict[str, Any]],
) -> None:
    segment, claims = two_gateways
    assert claims["a"]["host_name"] == "X1-interface.local"
    assert claims["c"]["host_name"] == "X1-interface-1.local"
    assert claims["c"]["service_name"] == "X1-interface-1._dsmr-x1-interface._tcp.local."
    found = poll(segment["b"], lambda: discover(2.0), lambda found: len(found) >= 2)
    assert [(g.host_name, g.addresses, g.port, g.serial) for g in found] == [
        ("X1-interface.local", (segment["a"].address,), 8443, "E0001"),
        ("X1-interface-1.local", (segment["c"].address,), 8444, "E0002"),
    ]


def test_find_gateway_picks_the_one_with_the_serial(
    two_gateways: tuple[Segment, dict[str, Any]],
) -> None:
    segment, _ = two_gateways
    b = segment["b"]
    c = b.run_async(lambda: find_gateway("E0002", timeout=BOUND - 10), timeout=BOUND)
    assert (c.host_name, c.addresses, c.port) == ("X1-interface-1.local", ("10.77.0.3",), 8444)
    a = b.run_async(lambda: find_gateway("E0001", timeout=BOUND - 10), timeout=BOUND)
    assert (a.host_name, a.addresses, a.port) == ("X1-interface.local", ("10.77.0.1",), 8443)

    with pytest.raises(DiscoveryError, match="serial E9999 did not answer") as missing:
        b.run_async(lambda: find_gateway("E9999", timeout=3.0))
    assert "X1-interface.local (serial E0001)" in str(missing.value)
    with pytest.raises(DiscoveryError, match="2 X1 gateways answered.*--gateway"):
        b.run_async(lambda: find_gateway(None, timeout=3.0))


def test_cli_discover_lists_both_gateways(two_gateways: tuple[Segment, dict[str, Any]]) -> None:
    segment, _ = two_gateways
    b = segment["b"]
    listed: list[dict[str, Any]] = []
    for _ in range(10):  # a few tries at most; each listens 3 s
        result = b.run([X1P1, "discover", "--json", "--timeout", "3"])
        if result.returncode == 0:
            listed = json.loads(result.stdout)
            if len(listed) == 2:
                break
    assert [(g["host_name"], g["addresses"], g["port"], g["serial"]) for g in listed] == [
        ("X1-interface.local", ["10.77.0.1"], 8443, "E0001"),
        ("X1-interface-1.local", ["10.77.0.3"], 8444, "E0002"),
    ]
    assert {g["version"] for g in listed} == {"6.0.0"} and {g["api"] for g in listed} == {"/api"}

    table = b.run([X1P1, "discover", "--timeout", "3"])
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["HOST", "NAME", "ADDRESSES", "PORT", "SERIAL"]
    assert lines[1].split() == ["X1-interface.local", "10.77.0.1", "8443", "E0001"]


def test_cli_discover_says_so_when_nothing_answers(
    segment_factory: Callable[..., Segment],  # noqa: F811
) -> None:
    lonely = segment_factory(["a", "b"])["a"]
    result = lonely.run([X1P1, "discover", "--timeout", "1"])
    assert result.returncode == 1 and result.stdout == ""
    assert "no X1 gateway answered on mDNS within 1 s" in result.stderr
    as_json = lonely.run([X1P1, "discover", "--timeout", "0.5", "--json"])
    assert as_json.returncode == 1 and json.loads(as_json.stdout) == []
    with pytest.raises(DiscoveryError, match="no X1 gateway answered on mDNS"):
        lonely.run_async(lambda: find_gateway(None, timeout=0.5))


def test_discover_finds_a_gateway_by_host_name_alone(
    segment_factory: Callable[..., Segment],  # noqa: F811
) -> None:
    segment = segment_factory(["a", "b"])
    other = segment["a"].python(HOST_ONLY, segment["a"].address)
    assert read_line(other, BOUND) == "ready"
    found = poll(segment["b"], lambda: discover(2.0), bool)
    assert [g.to_json() for g in found] == [
        {
            "host_name": "X1-interface-2.local",
            "addresses": [segment["a"].address],
            "port": 443,
            "serial": None,
            "api": "/api",
            "version": None,
            "service_name": None,
        }
    ]


def test_gateways_started_at_once_claim_distinct_names(
    segment_factory: Callable[..., Segment],  # noqa: F811
) -> None:
    # Both probe X1-interface.local in the same 750 ms. The tie-break (RFC 6762 §8.2)
    # gives it to the lexicographically later data, C's address 10.77.0.3, whoever
    # started first; without it the first to finish would take it, or both would.
    segment = segment_factory(["a", "b", "c"])
    procs = [start_advertiser(segment[h], 8443, f"E000{h}", wait_go=True) for h in "ac"]
    for proc in procs:
        assert read_json(proc, BOUND) == {"ready": True}
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    a, c = (read_json(proc, BOUND)["host_name"] for proc in procs)
    assert (a, c) == ("X1-interface-1.local", "X1-interface.local")
    found = poll(segment["b"], lambda: discover(2.0), lambda found: len(found) >= 2)
    assert [(g.host_name, g.addresses) for g in found] == [
        ("X1-interface.local", (segment["c"].address,)),
        ("X1-interface-1.local", (segment["a"].address,)),
    ]


def test_name_conflict_after_networks_join_is_resolved(
    segment_factory: Callable[..., Segment],  # noqa: F811
) -> None:
    # Two gateways claimed X1-interface.local apart; when their networks join, the answers
    # clash (RFC 6762 §9) and one of them moves on to X1-interface-1.local.
    segment = segment_factory(["a", "b", "c"])
    segment.detach("c")
    first = start_advertiser(segment["a"], 8443, "E0001")
    second = start_advertiser(segment["c"], 8444, "E0002")
    assert read_json(first, BOUND)["host_name"] == "X1-interface.local"
    assert read_json(second, BOUND)["host_name"] == "X1-interface.local"
    segment.attach("c")

    def distinct(found: list[DiscoveredGateway]) -> bool:
        return len(found) == 2 and all(g.serial for g in found)

    found = poll(segment["b"], lambda: discover(2.0), distinct)
    assert sorted(g.host_name for g in found) == ["X1-interface-1.local", "X1-interface.local"]
    renamed = [p for p in (first, second) if p.stdout and p.poll() is None]
    assert len(renamed) == 2  # both still run
    serial_of = {g.host_name: g.serial for g in found}
    mover = first if serial_of["X1-interface-1.local"] == "E0001" else second
    assert read_json(mover, BOUND) == {"renamed": "X1-interface-1.local"}

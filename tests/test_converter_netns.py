"""The converter on a real (namespaced) network: pair by mDNS, verify the host name while
connecting by address, and find the gateway again by its serial when it moves.

Two network namespaces on one Ethernet segment (tests/netns.py): ``gw`` runs
``x1p1 gateway serve`` with mDNS, ``pi`` runs ``x1p1 pair`` (no ``--gateway``: found by
mDNS) and ``x1p1 run`` into a pty. The gateway is then restarted on another port; the
converter's saved address no longer answers, and after a few failures it asks mDNS for
the gateway with its serial and carries on. Needs root; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.netns import Segment, read_line, segment_factory, stop, wait_until  # noqa: F401
from x1p1.converter.state import load_pairing
from x1p1.p1 import TelegramReader, ValidTelegram

pytestmark = pytest.mark.netns

X1P1 = [sys.executable, "-m", "x1p1.cli"]
BOUND = 60.0
_LISTENING = re.compile(r"listening on https://\S+:(\d+)")


def serve(segment: Segment, state_dir: Path, port: int = 0) -> tuple[subprocess.Popen[str], int]:
    proc = segment["gw"].popen(
        [
            *X1P1,
            "gateway",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            "--auto-approve",
        ],
    )
    line = read_line(proc, BOUND)
    match = _LISTENING.search(line)
    assert match, line
    return proc, int(match.group(1))


def telegrams(master: int, count: int, bound: float = BOUND) -> list[bytes]:
    """Read the pty until ``count`` valid telegrams arrived; fail on any invalid one."""
    reader = TelegramReader()
    out: list[bytes] = []
    deadline = time.monotonic() + bound
    while len(out) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(out)} of {count} telegrams within {bound} s"
        ready, _, _ = select.select([master], [], [], min(left, 1.0))
        if not ready:
            continue
        for event in reader.feed(os.read(master, 65536)):
            assert isinstance(event, ValidTelegram), event
            out.append(event.raw)
    return out


def drain(master: int) -> None:
    while select.select([master], [], [], 0.2)[0]:
        os.read(master, 65536)


def test_pair_by_mdns_and_follow_the_gateway_to_a_new_port(
    segment_factory: Callable[..., Segment],  # noqa: F811
    tmp_path: Path,
) -> None:
    segment = segment_factory(["gw", "pi"])
    gw_dir, state_dir = tmp_path / "gw", tmp_path / "state"
    gateway, port = serve(segment, gw_dir)
    ca = gw_dir / "pki" / "root-ca.pem"

    paired = segment["pi"].run(
        [*X1P1, "pair", "--ca", str(ca), "--state-dir", str(state_dir)], timeout=BOUND
    )
    assert paired.returncode == 0, paired.stdout + paired.stderr
    pairing = load_pairing(state_dir)
    assert pairing.host_name == "X1-interface.local"  # the certificate's name, from mDNS
    assert pairing.address == segment["gw"].address and pairing.port == port
    assert pairing.serial  # the TXT record's serial

    master, slave = os.openpty()
    run = segment["pi"].popen(
        [*X1P1, "run", "--serial", os.ttyname(slave), "--state-dir", str(state_dir)],
        stdout=subprocess.DEVNULL,
    )
    try:
        telegrams(master, 2)
        stop(gateway)
        gateway, new_port = serve(segment, gw_dir, port + 1 if port < 65535 else 1024)
        assert new_port != port
        wait_until(lambda: load_pairing(state_dir).port == new_port, BOUND, "found again")
        drain(master)  # what was relayed before the move
        telegrams(master, 2)  # from the gateway on its new port
        status = segment["pi"].run(
            [*X1P1, "status", "--json", "--state-dir", str(state_dir)], timeout=30
        )
        report = json.loads(status.stdout)
        assert report["connection"] == "connected" and report["counts"]["reconnects"] >= 1
    finally:
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=30)
        os.close(master)
        os.close(slave)
        stop(gateway)
    assert run.returncode == 0, err
    assert "looking for the gateway" in err and "found the gateway at" in err

"""Measurements over HTTPS and the first start's backfill of a real gateway.

Starts ``x1p1 gateway serve`` (a fresh state directory, loopback, port 0) as a child
process and prints:

- the first start: time to listening, the backfill of full retention and the signing of
  the billing readings (from the gateway's log line), and the time until the first
  history answer (target: backfill within 10 s);
- ``GET /api/meters/{id}/measurements`` for 730 daily values of 4 OBIS objects over
  HTTPS on loopback: p50 and p99 over one kept-alive connection and over a new TLS
  connection per call (target: p99 within 15 ms);
- the same for a billing call of a day of quarter hours (96 signed readings).

History is rate-limited per token (10 calls, one more every 10 s), so the benchmark pairs
enough devices (each approved on the meter's control socket) and spreads the calls over
them, 10 each: the server runs exactly as deployed. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_measurements.py [--runs N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from x1p1.converter.tls import client_ssl_context
from x1p1.gateway.control_client import ControlClient

CODES = "1-0:1.8.1.255,1-0:1.8.2.255,1-0:2.8.1.255,1-0:2.8.2.255"
PER_TOKEN = 10


def figures(label: str, times: list[float]) -> None:
    times = sorted(times)
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{label:<58} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   max {times[-1]:6.2f} ms")


class Gateway:
    """``x1p1 gateway serve`` in a child process; stderr is read for the backfill line."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "x1p1.cli",
                "gateway",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-mdns",
                "--state-dir",
                str(state_dir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        line = self.process.stdout.readline()
        self.listening = time.perf_counter() - self.started
        match = re.search(r"listening on https://127\.0\.0\.1:(\d+)", line)
        if not match:
            self.process.kill()
            raise SystemExit(f"the gateway did not start: {line!r}")
        self.port = int(match.group(1))
        self.backfill: str | None = None
        self._log = threading.Thread(target=self._read_log, daemon=True)
        self._log.start()
        self.context = client_ssl_context(state_dir / "pki" / "root-ca.pem")
        self.control = ControlClient(state_dir)

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if "backfilled" in line:
                self.backfill = line.split("history: ", 1)[-1].strip()

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=30)

    def request(
        self,
        conn: http.client.HTTPSConnection,
        method: str,
        path: str,
        token: str | None = None,
        body: object = None,
    ) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()

    def pair(self, conn: http.client.HTTPSConnection) -> str:
        body = {"name": "bench", "uuid": str(uuid.uuid4()), "profiles": ["E-HISTORIC", "E-BILLING"]}
        status, raw = self.request(conn, "POST", "/api/tokens/requests", body=body)
        assert status == 202, raw
        request_id = json.loads(raw)["request_id"]
        self.control.approve(request_id)
        status, raw = self.request(conn, "GET", f"/api/tokens/requests/{request_id}")
        token = json.loads(raw)["token"]
        assert isinstance(token, str)
        return token

    def stop(self) -> None:
        self.control.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def timed(calls: int, tokens: list[str], call: Callable[[str], tuple[int, bytes]]) -> list[float]:
    times = []
    for i in range(calls):
        start = time.perf_counter()
        status, _ = call(tokens[i // PER_TOKEN])
        times.append((time.perf_counter() - start) * 1000)
        assert status == 200, status
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="calls per figure")
    args = parser.parse_args()
    runs = max(20, args.runs)

    with tempfile.TemporaryDirectory(prefix="x1p1-bench-measurements-") as tmp:
        gw = Gateway(Path(tmp) / "gw")
        try:
            conn = gw.connect()
            token = gw.pair(conn)
            e_id = json.loads(gw.request(conn, "GET", "/api/meters", token)[1])["meters"][0][
                "equipment_id"
            ]
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
            path = (
                f"/api/meters/{e_id}/measurements?obis={CODES}&resolution=1d"
                f"&from=2000-01-01T00:00:00Z&to={now}"
            )
            status, raw = gw.request(conn, "GET", path, token)  # waits for the backfill
            ready = time.perf_counter() - gw.started
            body = json.loads(raw)
            assert status == 200 and len(body["readings"]) == 730, (status, raw[:200])
            for _ in range(50):
                if gw.backfill:
                    break
                time.sleep(0.1)
            print(
                f"first start: listening after {gw.listening:.2f} s; "
                f"{gw.backfill or '(no log line)'}; first history answer after "
                f"{ready:.2f} s"
            )
            print(
                f"answer: {len(body['readings'])} daily readings x "
                f"{len(body['units'])} OBIS objects, {len(raw)} bytes"
            )

            needed = (3 * runs + 2 * PER_TOKEN) // PER_TOKEN + 2
            tokens = [gw.pair(conn) for _ in range(needed)]
            for t in tokens:  # each device's first use of the hour writes its comlog row
                gw.request(conn, "GET", "/api/token", t)
            print(
                f"{len(tokens)} devices paired: {PER_TOKEN} calls each (the rate limit); "
                "each used once before (its comlog row of the hour is written then)"
            )
            timed(PER_TOKEN, tokens[:1], lambda t: gw.request(conn, "GET", path, t))  # warm
            rest = tokens[1:]
            base = timed(
                runs, [tokens[0]] * runs, lambda t: gw.request(conn, "GET", "/api/token", t)
            )
            figures("baseline: GET /api/token, kept-alive HTTPS connection", base)
            keep = timed(runs, rest, lambda t: gw.request(conn, "GET", path, t))
            figures("measurements 730 x 4, kept-alive HTTPS connection", keep)

            def fresh(t: str) -> tuple[int, bytes]:
                c = gw.connect()
                try:
                    return gw.request(c, "GET", path, t)
                finally:
                    c.close()

            offset = runs // PER_TOKEN
            figures(
                "measurements 730 x 4, new TLS connection per call",
                timed(runs, rest[offset:], fresh),
            )
            day = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() - 86400))
            billing = f"/api/meters/{e_id}/billing?from={day}&to={now}"
            status, raw = gw.request(conn, "GET", billing, rest[-1])  # a spare device
            count = len(json.loads(raw)["readings"])
            figures(
                f"billing, {count} signed readings, kept-alive connection",
                timed(runs, rest[2 * offset :], lambda t: gw.request(conn, "GET", billing, t)),
            )
            print("targets: measurements p99 <= 15 ms; backfill <= 10 s")
            conn.close()
        finally:
            gw.stop()


if __name__ == "__main__":
    main()

"""The gateway's housekeeping loop: how late requests expire, and how often it wakes.

Runs a gateway in this process (loopback, port 0, mDNS off, a temporary state
directory) with the device requests' 10 minutes (§5.1.4) shortened to ``--lifetime``
seconds, then:

1. counts the housekeeping rounds while nothing waits, for ``--idle`` seconds;
2. makes ``--requests`` token requests from hosts 127.0.1.x, ``--spread`` seconds apart,
   lets them all expire unanswered, and prints how late each expiry reached the
   gateway's listeners (the comlog) after its deadline, and the rounds it took.

The timers-are-data rule (architecture.md, habit 12) says: one round per deadline or change,
none while nothing is due. Asserts nothing.

    .venv/bin/python bench/bench_housekeeping.py [--requests N] [--lifetime S] [--idle S]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from x1p1.gateway.app import Gateway, GatewayConfig
from x1p1.gateway.state import GatewayEvent
from x1p1.x1.api import TokenRequestBody
from x1p1.x1.grants import LIFETIME, RequestKind


async def run(args: argparse.Namespace) -> None:
    LIFETIME[RequestKind.DEVICE] = timedelta(seconds=args.lifetime)
    with tempfile.TemporaryDirectory() as directory:
        config = GatewayConfig(state_dir=Path(directory), host="127.0.0.1", port=0, mdns=False)
        gw = Gateway(config)
        await gw.start()
        try:
            assert gw.state is not None
            grants = gw.state.grants
            await asyncio.sleep(0.1)
            before = gw.housekeeping_rounds
            await asyncio.sleep(args.idle)
            idle = gw.housekeeping_rounds - before
            print(f"idle {args.idle:.0f} s, nothing due: {idle} housekeeping rounds")

            seen: dict[str, datetime] = {}
            done = asyncio.Event()

            def note(event: GatewayEvent) -> None:
                if event.kind == "request-expired":
                    seen[str(event.details["request_id"])] = datetime.now(UTC)
                    if len(seen) >= args.requests:
                        done.set()

            gw.state.listeners.append(note)
            deadlines: dict[str, datetime] = {}
            before = gw.housekeeping_rounds
            started = time.monotonic()
            for i in range(args.requests):
                body = TokenRequestBody.parse(
                    {"name": f"bench {i}", "uuid": str(uuid.uuid4()), "profiles": ["P1"]}
                )
                state = grants.create_request(body, f"127.0.1.{i // 2 + 1}")
                deadlines[state.request_id] = grants.request(state.request_id).expires_at
                await asyncio.sleep(args.spread)
            await asyncio.wait_for(done.wait(), args.lifetime + args.requests * args.spread + 30)
            rounds = gw.housekeeping_rounds - before
            late = sorted((seen[r] - deadlines[r]).total_seconds() * 1000 for r in deadlines)
            print(
                f"{args.requests} requests, {args.lifetime:.0f} s lifetime, "
                f"{args.spread:.2f} s apart, over {time.monotonic() - started:.1f} s"
            )
            print(
                f"expiry after the deadline: p50 {statistics.median(late):.1f} ms, "
                f"max {late[-1]:.1f} ms, min {late[0]:.1f} ms"
            )
            print(
                f"housekeeping rounds meanwhile: {rounds} "
                f"({args.requests} requests made + {args.requests} deadlines)"
            )
        finally:
            await gw.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--lifetime", type=float, default=3.0)
    parser.add_argument("--spread", type=float, default=0.25)
    parser.add_argument("--idle", type=float, default=30.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

"""Helpers shared by the converter's tests: fast options, a saved pairing, a running daemon."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from x1p1.converter.state import SavedPairing, save_pairing
from x1p1.converter.stream import StreamSettings
from x1p1.converter.supervisor import Converter, ConverterOptions
from x1p1.x1.profiles import Profile

TEST_UUID = "0b5c2f0e-1111-4222-8333-444455556666"


def fast_options(state_dir: Path, serial: str | None, **kwargs: Any) -> ConverterOptions:
    """The real schedule, 100 times faster, so no test sleeps through a backoff."""
    stream = StreamSettings(scale=0.01, stall_timeout=2.0, open_timeout=5.0)
    options = ConverterOptions(
        state_dir=state_dir,
        serial=serial,
        stream=stream,
        tick=0.05,
        token_check=0.05,
        status_interval=0.05,
        serial_reopen=0.05,
    )
    for key, value in kwargs.items():
        setattr(options, key, value)
    return options


def save_test_pairing(
    state_dir: Path,
    *,
    token: str,
    port: int,
    ca_pem: str | None,
    host_name: str = "X1-interface.local",
    address: str | None = "127.0.0.1",
    serial: str | None = None,
    profiles: frozenset[Profile] = frozenset({Profile.P1}),
) -> SavedPairing:
    """What `x1p1 pair` would have saved."""
    pairing = SavedPairing(
        token=token,
        host_name=host_name,
        port=port,
        address=address,
        serial=serial,
        ca_pem=ca_pem,
        ca_source=None,
        profiles=profiles,
        expires_at=None,
        name="x1p1 test",
        uuid=TEST_UUID,
        paired_at=datetime.now(UTC).replace(microsecond=0),
    )
    save_pairing(state_dir, pairing)
    return pairing


@contextlib.asynccontextmanager
async def running(options: ConverterOptions) -> AsyncIterator[Converter]:
    """A converter running on this event loop, stopped (and checked) on the way out."""
    converter = Converter(options)
    task = asyncio.create_task(converter.run())
    try:
        yield converter
    finally:
        converter.stop()
        assert await asyncio.wait_for(task, 20) == 0

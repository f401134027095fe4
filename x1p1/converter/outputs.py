"""Several P1 outputs from one X1 port: the fan-out (docs/config.example.toml, ``[[output]]``).

A house may have more than one P1 device: a display, a home battery or an EV charger
that balances its load on the P1 reading, a HEMS. Each ``[[output]]`` of the config is
one :class:`Output`: a serial port (:mod:`x1p1.converter.serial_out`, with its own Data
Request, P1 §5.7.1) or a TCP server (:mod:`x1p1.converter.tcp_out`), and the seconds
between the telegrams it gets (``interval``: 1 is every telegram, P1 §6; 10 suits a
device of the DSMR 4 era).

The outputs are independent. :meth:`Outputs.publish` hands each telegram to every due
output without waiting for any: a serial output's hand-over is one non-blocking write or
a one-slot mailbox that its own thread drains (latest wins), a TCP output's is a write
to each client's transport that drops for a client still busy with the previous one. So
an absent, stuck or gated output never delays or starves another, and none builds a
queue. An output that raises is counted and logged (at most once a minute), and the
others carry on.

``interval`` counts on the time each telegram arrived (``received``, the monotonic clock
passed in): an output is due when ``interval`` seconds, less half a second of jitter,
have passed since the telegram it last got.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from x1p1.converter.config import OutputConfig
from x1p1.converter.quiet import CauseLog
from x1p1.converter.serial_out import SerialLike, SerialOutput, check_serial_path, open_serial
from x1p1.converter.tcp_out import BACKLOG, TcpOutput
from x1p1.descriptors import connection_budget
from x1p1.exceptions import NotASerialDevice

__all__ = ["DESCRIPTOR_RESERVE", "JITTER", "Output", "OutputCounts", "Outputs"]

log = logging.getLogger(__name__)

JITTER = 0.5
"""Seconds a telegram may come early and still count for an output's ``interval``."""
ERROR_LOG_EVERY = 60.0
"""An output's failure is logged at most this often (seconds)."""
DESCRIPTOR_RESERVE = 64
"""Descriptors no TCP client may take: the serial ports (and their reopening), the X1
connection and the REST calls beside it, mDNS, the status socket and its clients, the
status file, the state lock, the log, the event loop's own."""


@dataclass
class OutputCounts:
    """What one output did with the telegrams it was offered."""

    offered: int = 0
    """Telegrams handed to the output (due by its interval)."""
    skipped: int = 0
    """Telegrams not offered: the output's interval had not passed."""
    errors: int = 0
    """Hand-overs that raised (logged at most once a minute)."""


@dataclass
class Output:
    """One ``[[output]]``: a serial port or a TCP server, and its interval."""

    config: OutputConfig
    serial: SerialOutput | None = None
    tcp: TcpOutput | None = None
    counts: OutputCounts = field(default_factory=OutputCounts)
    _next_due: float | None = None
    _logged_at: float | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def due(self, received: float) -> bool:
        """Whether the telegram that arrived at ``received`` goes to this output."""
        interval = self.config.interval
        if interval <= 1:
            return True
        return self._next_due is None or received >= self._next_due - JITTER

    def offer(self, raw: bytes, received: float) -> None:
        """Hand over one checked telegram if the output is due; never blocks or raises."""
        if not self.due(received):
            self.counts.skipped += 1
            return
        self._next_due = received + self.config.interval
        self.counts.offered += 1
        try:
            if self.serial is not None:
                self.serial.offer(raw, received)
            if self.tcp is not None:
                self.tcp.publish(raw)
        except Exception as exc:  # one output's fault must not reach the others
            self.counts.errors += 1
            if self._logged_at is None or received - self._logged_at >= ERROR_LOG_EVERY:
                self._logged_at = received
                log.error("output %s failed: %s: %s", self.name, type(exc).__name__, exc)

    def status(self) -> dict[str, Any]:
        """This output in ``x1p1 status --json`` (``outputs``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": "serial" if self.serial is not None else "tcp",
            "interval": self.config.interval,
            "offered": self.counts.offered,
            "skipped_interval": self.counts.skipped,
            "errors": self.counts.errors,
        }
        if self.serial is not None:
            stats = self.serial.stats
            out.update(
                state=self.serial.state.value,
                error=self.serial.error,
                data_request={
                    "mode": self.serial.data_request,
                    "state": self.serial.dr_state.value,
                },
                written=stats.written,
                stale=stats.stale,
                not_requested=stats.not_requested,
                resets=stats.resets,
            )
        if self.tcp is not None:
            out.update(
                state="listening" if self.tcp.serving else "closed",
                listen=self.tcp.address_text,
                clients=self.tcp.clients,
                sent=self.tcp.sent,
                dropped=self.tcp.dropped,
            )
        return out


class Outputs:
    """Every output of one run: start them, fan each telegram out, close them."""

    def __init__(
        self,
        configs: Iterable[OutputConfig],
        *,
        opener: Callable[[str, float], SerialLike] = open_serial,
        serial_reopen: float = 1.0,
        tcp_clients: int = 16,
        quiet: CauseLog | None = None,
    ) -> None:
        self.outputs: list[Output] = []
        for config in configs:
            if config.serial:
                serial = SerialOutput(
                    config.serial,
                    config.data_request,
                    opener=opener,
                    reopen_interval=serial_reopen,
                )
                self.outputs.append(Output(config, serial=serial))
            elif config.tcp is not None:
                tcp = TcpOutput(config.tcp, max_clients=tcp_clients, quiet=quiet)
                self.outputs.append(Output(config, tcp=tcp))

    def __iter__(self) -> Any:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)

    @property
    def serials(self) -> list[SerialOutput]:
        return [o.serial for o in self.outputs if o.serial is not None]

    @property
    def tcps(self) -> list[TcpOutput]:
        return [o.tcp for o in self.outputs if o.tcp is not None]

    def publish(self, raw: bytes, received: float) -> None:
        """Hand one checked telegram to every due output (see the module docstring)."""
        for output in self.outputs:
            output.offer(raw, received)

    def start_threads(self) -> None:
        """Start each serial port's worker thread (before the event loop's part)."""
        for serial in self.serials:
            serial.start()

    async def start(self) -> None:
        """Open the TCP servers."""
        for tcp in self.tcps:
            await tcp.start()

    async def close(self) -> None:
        """Close the TCP servers (the serial threads stop in :meth:`stop_threads`)."""
        for tcp in self.tcps:
            await tcp.close()

    def check_serial_paths(self) -> None:
        """Refuse, in one sentence, a serial output whose path exists but is no serial
        device (:func:`~x1p1.converter.serial_out.check_serial_path`), naming where it was
        given: ``--serial``, or its ``[[output]]`` table (docs/config.example.toml)."""
        for output in self.outputs:
            if output.serial is None:
                continue
            try:
                check_serial_path(output.serial.url)
            except NotASerialDevice as exc:
                named = f"--serial {output.serial.url}"
                origin = output.config.describe_serial()
                if origin == named:
                    raise
                text = str(exc)
                text = (
                    origin + text[len(named) :] if text.startswith(named) else f"{origin}: {text}"
                )
                raise NotASerialDevice(text) from None

    def summarise(self, now: float) -> None:
        """Each TCP output's hourly summary of its clients, when due (every output has its
        own clients and its own hour)."""
        for tcp in self.tcps:
            tcp.summarise(now)

    def fit_descriptors(self, nofile: int, in_use: int) -> None:
        """Cap the TCP clients so that :data:`DESCRIPTOR_RESERVE` descriptors always stay
        for the serial line and the X1 connection (docs/x1-api.md, "What the converter
        tolerates"): ``nofile`` is the limit, ``in_use`` the descriptors open now."""
        tcps = self.tcps
        if not tcps:
            return
        per_server = 2 + BACKLOG  # its listening sockets (IPv4 and IPv6), a burst of connects
        reserve = DESCRIPTOR_RESERVE + per_server * len(tcps)
        share = connection_budget(nofile, in_use, reserve) // len(tcps)
        for tcp in tcps:
            if tcp.max_clients > share:
                log.warning(
                    "the descriptor limit (%d) leaves room for %d TCP P1 clients on %s, not "
                    "%d (tcp_clients); raise LimitNOFILE to serve more",
                    nofile,
                    share,
                    tcp.listen,
                    tcp.max_clients,
                )
                tcp.max_clients = share

    def stop_threads(self) -> None:
        for serial in self.serials:
            serial.stop()

    def status(self) -> list[dict[str, Any]]:
        return [output.status() for output in self.outputs]

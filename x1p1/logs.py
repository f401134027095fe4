"""Logging for every x1p1 command: standard error, journald-friendly, never a token.

One handler on the root logger writes to standard error in one of two formats:

- under systemd, when standard error is the journal (``$JOURNAL_STREAM`` names the same
  device and inode as our standard error, systemd.exec(5)) or the process is a service
  (``$INVOCATION_ID``) whose standard error is no terminal: every line starts with an
  sd-daemon(3) priority prefix ``<3>`` … ``<7>`` and carries no timestamp, because the
  journal stamps each entry itself;
- otherwise a compact human format with the time of day.

``--verbose``/``--quiet`` (a count each) move the level: ``-q`` warnings, ``-qq`` errors
only, ``-v`` x1p1's debug messages, ``-vv`` the libraries' debug messages too. Without
them, x1p1 logs at info and the libraries at warning.

:class:`RedactTokens`, a filter on that handler, rewrites every record before it is
written: an ``Authorization: Bearer …`` value, a ``token`` field or parameter, and any
43-character base64url word (an X1 API token is 256 random bits in base64url, X1 §5.1.2)
become ``[redacted]``, in the message, its arguments, the traceback and the stack.

:class:`RateLimitLogs`, the handler's first filter, lets at most 20 records of one cause
(logger, level, message template, exception type) through a minute and says on the next
one how many it held back: no peer on the network can fill the journal or the disk by
repeating what makes a line (docs/reliability.md). :class:`LogLimiter` is its rule,
usable alone.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TextIO

__all__ = [
    "LEVELS",
    "REDACTED",
    "JournalFormatter",
    "LogLimiter",
    "RateLimitLogs",
    "RedactTokens",
    "level_for",
    "redact",
    "setup_logging",
    "under_journald",
]

#: Level names accepted by ``log_level`` in the config file.
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

REDACTED = "[redacted]"

_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s,;\"'<>]+")
_TOKEN_FIELD = re.compile(
    r"""(?ix)
    (token["']?\s*[:=]\s*["']?)     # token=…, "token": "…", 'api_token': '…'
    [A-Za-z0-9_\-.~+=]{16,}         # a value long enough to be a secret
    """
)
_BASE64URL_43 = re.compile(r"(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{43}(?![A-Za-z0-9_\-])")

_HUMAN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_HUMAN_DATEFMT = "%H:%M:%S"


def redact(text: str) -> str:
    """``text`` with every bearer token, token field and 43-char base64url word hidden."""
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _TOKEN_FIELD.sub(lambda m: m.group(1) + REDACTED, text)
    return _BASE64URL_43.sub(REDACTED, text)


class RedactTokens(logging.Filter):
    """Rewrite each record so that no token reaches a log line (see :func:`redact`).

    The message is formatted here, once, and stored without arguments, so that no handler
    or formatter after this filter ever sees the raw values.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad arguments: keep what we can, hidden like the rest
            message = f"{record.msg!s} (log arguments {record.args!r} do not fit)"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class LogLimiter:
    """At most ``per_window`` messages per cause in each ``window`` seconds (no I/O; ``now``
    is passed in, a monotonic clock in seconds).

    :meth:`allow` says whether a message of ``cause`` may go out and, when it may, how
    many of that cause were held back since the last one that went out, so the line can
    say so. At most ``max_causes`` causes are tracked: past that, the oldest windows go
    first, and a new cause that finds no room is held back under one shared cause, so an
    attacker who varies the cause still cannot grow memory or the log without bound.
    """

    def __init__(self, per_window: int = 20, window: float = 60.0, max_causes: int = 1024) -> None:
        if per_window < 1 or window <= 0 or max_causes < 1:
            raise ValueError("per_window and max_causes must be >= 1 and window > 0")
        self.per_window = per_window
        self.window = window
        self.max_causes = max_causes
        self._causes: dict[Hashable, list[float]] = {}
        """cause → [window start, messages let out in it, messages held back since the
        last one let out]"""

    def allow(self, cause: Hashable, now: float) -> int | None:
        """None: hold this message back. Otherwise the count held back before it."""
        entry = self._causes.get(cause)
        if entry is None:
            if len(self._causes) >= self.max_causes:
                self._sweep(now)
            if len(self._causes) >= self.max_causes:
                cause = _OVERFLOW
                entry = self._causes.get(cause)
            if entry is None:
                entry = self._causes[cause] = [now, 0.0, 0.0]
        if now - entry[0] >= self.window or now < entry[0]:
            entry[0], entry[1] = now, 0.0
        if entry[1] >= self.per_window:
            entry[2] += 1
            return None
        entry[1] += 1
        held, entry[2] = int(entry[2]), 0.0
        return held

    def _sweep(self, now: float) -> None:
        """Forget causes whose window has ended and which hold nothing back."""
        for cause in [c for c, e in self._causes.items() if now - e[0] >= self.window and not e[2]]:
            del self._causes[cause]

    def __len__(self) -> int:
        return len(self._causes)


_OVERFLOW = object()
"""The one cause of every message that found the limiter full."""


class RateLimitLogs(logging.Filter):
    """Hold back log records past :class:`LogLimiter`'s share per cause; the next record
    of that cause that goes out says how many were held back.

    A cause is the logger, the level and the message's template (before its arguments),
    plus the exception's type: "connection from %s refused" is one cause whatever the
    address, so no host can fill the log or the disk by repeating itself."""

    def __init__(
        self, limiter: LogLimiter | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.limiter = limiter or LogLimiter()
        self.clock = clock

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[0] if record.exc_info else None
        cause = (record.name, record.levelno, str(record.msg), error)
        held = self.limiter.allow(cause, self.clock())
        if held is None:
            return False
        if held:
            try:
                message = record.getMessage()
            except Exception:
                message = str(record.msg)
            record.msg = f"{message} ({held} more like it held back)"
            record.args = None
        return True


def _priority(levelno: int) -> int:
    """The syslog priority of a Python level (sd-daemon(3): 3 err … 7 debug)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """``<N>name: message``, with the prefix on every line of a multi-line record.

    journald splits a stream on newlines; a traceback's later lines would otherwise land
    as separate entries at the default priority.
    """

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def under_journald(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """True if ``stream`` goes to the journal or the process is a systemd service."""
    environ = os.environ if env is None else env
    journal = environ.get("JOURNAL_STREAM", "")
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    if journal and fd >= 0:
        device, _, inode = journal.partition(":")
        try:
            st = os.fstat(fd)
        except OSError:
            pass
        else:
            if device.isdigit() and inode.isdigit():
                if (st.st_dev, st.st_ino) == (int(device), int(inode)):
                    return True
    if environ.get("INVOCATION_ID"):
        return not (fd >= 0 and os.isatty(fd))
    return False


def level_for(verbosity: int, level: str | None = None) -> int:
    """x1p1's log level: ``verbosity`` (``-v`` minus ``-q``) if nonzero, else ``level``.

    ``level`` is a name from :data:`LEVELS` (the config file's ``log_level``); info when
    neither is given.
    """
    if verbosity >= 1:
        return logging.DEBUG
    if verbosity == -1:
        return logging.WARNING
    if verbosity <= -2:
        return logging.ERROR
    if level is None:
        return logging.INFO
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; choose {', '.join(LEVELS)}") from None


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that, unless given a stream, writes to whatever sys.stderr is now.

    Click's test runner and others swap sys.stderr; a handler holding the old one would
    write into a closed file.
    """

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._follow = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow:
            self.stream = sys.stderr
        super().emit(record)


def setup_logging(
    verbosity: int = 0,
    *,
    level: str | None = None,
    stream: TextIO | None = None,
    journald: bool | None = None,
    env: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Send logs to standard error (or ``stream``) in the right format; return the handler.

    ``verbosity`` is ``-v`` count minus ``-q`` count; when it is 0, ``level`` (a
    :data:`LEVELS` name, e.g. the config file's ``log_level``) applies. ``journald``
    forces a format; by default :func:`under_journald` decides. Calling it again replaces
    the handler it installed before and leaves other handlers alone.
    """
    x1p1_level = level_for(verbosity, level)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _StderrHandler(stream)
    use_journal = (
        journald
        if journald is not None
        else under_journald(stream if stream is not None else sys.stderr, env)
    )
    if use_journal:
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(_HUMAN_FORMAT, _HUMAN_DATEFMT))
    handler.addFilter(RateLimitLogs())
    handler.addFilter(RedactTokens())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else max(logging.WARNING, x1p1_level))
    logging.getLogger("x1p1").setLevel(x1p1_level)
    return handler

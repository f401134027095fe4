"""The converter's tolerant readers of what a gateway sends (architecture.md, habit 10).

The gateway's value objects in :mod:`x1p1.x1.api` refuse whatever the contract does not
allow, because that is where we serve. Here is where we read: real gateways come from
other vendors, and the X1 standard leaves the wire format "for a later version" (X1
§5.1.2, §8). These readers take what the converter needs from an answer and ignore the
rest (docs/x1-api.md, "What the converter tolerates"):

* :func:`retry_after`: the one parser of ``Retry-After`` (seconds or an HTTP-date,
  RFC 9110 §10.2.3); garbage gives the caller's default, and no wait exceeds an hour.
* :func:`printable`: the one sanitizer of gateway text before it is logged or shown
  (control characters escaped, so a newline cannot forge a journal entry and an escape
  code cannot reach a terminal; the length capped).
* :func:`read_time`: ``expires_at`` in any of the forms gateways write.
* :func:`read_request_state`: a token request's state from a ``POST`` or poll answer
  (X1 §5.1.2–§5.1.6).
* :func:`read_token_info`: the token's expiry and profiles (X1 §5.2).
* :func:`read_error`: the code and message of an error answer, JSON or not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from x1p1.exceptions import (
    BY_CODE,
    APIError,
    ForbiddenProfile,
    RateLimited,
    SeveralWaiting,
    X1Error,
)

__all__ = [
    "RETRY_AFTER_MAX",
    "TEXT_MAX",
    "ErrorAnswer",
    "RequestAnswer",
    "TokenAnswer",
    "printable",
    "read_error",
    "read_request_state",
    "http_date",
    "read_time",
    "read_token_info",
    "retry_after",
    "x1_error_from_body",
]

RETRY_AFTER_MAX = 3600.0
"""No ``Retry-After`` parks the converter for more than an hour: a gateway that asks
for a day (or a year) is asked again after one."""
TEXT_MAX = 200
"""Characters of gateway text kept in a log line or a sentence; the rest becomes ``…``."""
_DIGITS_MAX = 9
"""``Retry-After`` digits read as a number; longer is "very long", i.e. the cap."""


def retry_after(value: object, *, now: datetime, default: float | None) -> float | None:
    """Seconds to wait, from a ``Retry-After`` header (RFC 9110 §10.2.3).

    Whole seconds or an HTTP-date (compared with ``now``, an aware datetime); a date in
    the past is 0. Absent, empty or unreadable (``²``, ``soon``, a number with a
    fraction) gives ``default``. Never more than :data:`RETRY_AFTER_MAX`.
    """
    if not isinstance(value, str):
        return default
    text = value.strip()
    if not text:
        return default
    if text.isascii() and text.isdigit():
        if len(text) > _DIGITS_MAX:
            return RETRY_AFTER_MAX
        return min(float(int(text)), RETRY_AFTER_MAX)
    when = http_date(text)
    if when is None:
        return default
    seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return default
    return min(max(0.0, seconds), RETRY_AFTER_MAX)


_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_HTTP_DATES = (
    # IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT" (and RFC 850 "Sunday, 06-Nov-94 …")
    re.compile(
        r"[A-Za-z]{3,9},\s*(?P<d>\d{1,2})[ -](?P<m>[A-Za-z]{3})[ -](?P<y>\d{2,4})\s+"
        r"(?P<t>\d\d:\d\d:\d\d)(\s+(GMT|UTC|\+0000|-0000))?\Z"
    ),
    # asctime "Sun Nov  6 08:49:37 1994"
    re.compile(
        r"[A-Za-z]{3}\s+(?P<m>[A-Za-z]{3})\s+(?P<d>\d{1,2})\s+(?P<t>\d\d:\d\d:\d\d)"
        r"\s+(?P<y>\d{4})\Z"
    ),
)


def http_date(text: str) -> datetime | None:
    """An HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, RFC 850 or asctime form) in UTC, or None."""
    for pattern in _HTTP_DATES:
        found = pattern.match(text.strip())
        if found is None:
            continue
        month = _MONTHS.get(found["m"].lower())
        year = int(found["y"])
        if year < 100:  # RFC 850: a two-digit year more than 50 years ahead is past
            year += 2000 if year < 70 else 1900
        hour, minute, second = (int(part) for part in found["t"].split(":"))
        if month is None:
            return None
        try:
            return datetime(year, month, int(found["d"]), hour, minute, min(second, 59), tzinfo=UTC)
        except ValueError:
            return None
    return None


def printable(text: object, limit: int = TEXT_MAX) -> str:
    """Gateway text made safe to log or show: one line, no control characters, capped.

    Control and other non-printable characters (``\\n``, ``ESC``, ``DEL``, bidi
    overrides) become ``\\n``, ``\\x1b``, ``\\u202e``; a string over ``limit``
    characters ends in ``…``. Non-strings are shown with their ``str()``.
    """
    raw = text if isinstance(text, str) else str(text)
    if len(raw) > 4 * limit:
        raw = raw[: 4 * limit]
    out: list[str] = []
    size = 0
    for char in raw:
        piece = char if char.isprintable() else _escape(char)
        size += len(piece)
        if size > limit:
            out.append("…")
            break
        out.append(piece)
    return "".join(out)


def _escape(char: str) -> str:
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_NAIVE = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?\Z")


def read_time(value: object) -> datetime | None:
    """A gateway's time as an aware UTC datetime, or None when absent or unreadable.

    RFC 3339 with or without a fraction or an offset (a time without one is read as
    UTC), ``z`` for ``Z``, a space for ``T``, or Unix seconds (an int, a float, or a
    string of digits). The converter uses such times only to show them: it never
    compares the gateway's clock with its own (docs/x1-api.md).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.replace(".", "", 1).isdigit():
            seconds = float(text)
        else:
            text = text.replace("z", "Z").replace("Z", "+00:00")
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                return None
            if moment.tzinfo is None:
                if not _NAIVE.match(value.strip()):
                    return None
                moment = moment.replace(tzinfo=UTC)
            try:
                return moment.astimezone(UTC)
            except (OverflowError, ValueError):
                return None
    else:
        return None
    if not math.isfinite(seconds):
        return None
    if seconds > 1e11:  # milliseconds, as JavaScript writes them
        seconds /= 1000.0
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class RequestAnswer:
    """What the converter takes from a token request's answer (X1 §5.1.2–§5.1.6).

    ``status`` is lower case and may be one the converter does not know (it keeps
    polling then). ``profiles`` is None when the gateway did not list them ("as asked").
    ``code`` is the 4 digits the meter's display shows with the request, when given.
    """

    status: str
    request_id: str | None = None
    expires_at: datetime | None = None
    token: str | None = None
    profiles: tuple[str, ...] | None = None
    code: str | None = None


def read_request_state(body: object) -> RequestAnswer | None:
    """The parts of a token request's answer the converter uses, or None without a status.

    Missing, ``null`` and unknown fields are ignored; only a ``status`` is needed (and,
    when it says approved, a ``token``, which the caller checks).
    """
    if not isinstance(body, Mapping):
        return None
    status = body.get("status")
    if not isinstance(status, str) or not status.strip():
        return None
    request_id = body.get("request_id")
    token = body.get("token")
    raw_profiles = body.get("profiles")
    profiles: tuple[str, ...] | None = None
    if isinstance(raw_profiles, list):
        profiles = tuple(p.strip().upper() for p in raw_profiles if isinstance(p, str))
    elif isinstance(raw_profiles, str):  # "P1,E-FORECAST"
        profiles = tuple(p.strip().upper() for p in raw_profiles.split(",") if p.strip())
    code = body.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= 9999:
        code = f"{code:04d}"
    return RequestAnswer(
        status=status.strip().lower(),
        request_id=request_id if isinstance(request_id, str) and request_id else None,
        expires_at=read_time(body.get("expires_at")),
        token=token.strip() if isinstance(token, str) and token.strip() else None,
        profiles=profiles,
        code=code if isinstance(code, str) and re.fullmatch(r"\d{4}", code) else None,
    )


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """An error answer's ``error`` code (lower case, or None) and its message, both
    through :func:`printable`, or the start of a body that is not JSON."""

    code: str | None
    message: str


def read_error(body: object, text: str = "") -> ErrorAnswer:
    """Read an error answer tolerantly: the X1 body (x1-api.md, Errors), a body with only a
    ``message`` or ``detail``, or plain text (``text``, the raw body)."""
    if isinstance(body, Mapping):
        code = body.get("error") or body.get("code")
        message = body.get("message") or body.get("detail") or body.get("error_description")
        return ErrorAnswer(
            printable(code, 64).lower() if isinstance(code, str) and code else None,
            printable(message) if isinstance(message, str) else "",
        )
    return ErrorAnswer(None, printable(" ".join(text.split())))


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    """What the converter takes from ``GET /api/token`` (X1 §5.2): the expiry, the
    profiles (upper case; None when not listed)."""

    expires_at: datetime | None
    profiles: tuple[str, ...] | None


def read_token_info(body: object) -> TokenAnswer:
    """``GET /api/token``'s answer, whatever else it carries (never raises)."""
    if not isinstance(body, Mapping):
        return TokenAnswer(None, None)
    raw = body.get("profiles")
    profiles = (
        tuple(p.strip().upper() for p in raw if isinstance(p, str))
        if isinstance(raw, list)
        else None
    )
    return TokenAnswer(read_time(body.get("expires_at")), profiles)


def x1_error_from_body(
    status: int, body: object, headers: Mapping[str, str] | None = None, *, now: datetime
) -> X1Error | APIError:
    """Map an error response from a gateway back to its exception (client side): the
    X1 error code names the class (x1-api.md, Errors); ``Retry-After`` is read by
    :func:`retry_after` at ``now``."""
    code = body.get("error") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    text = message if isinstance(message, str) else f"HTTP {status}"
    cls = BY_CODE.get(code) if isinstance(code, str) else None
    if cls is None:
        return APIError(status, code if isinstance(code, str) else "unknown", text)
    if cls is ForbiddenProfile:
        missing = body.get("missing") if isinstance(body, dict) else None
        return ForbiddenProfile(text, missing=[str(m) for m in missing or []])
    if cls is SeveralWaiting:
        waiting = body.get("waiting") if isinstance(body, dict) else None
        rows = [
            (str(w.get("request_id")), str(w.get("code")), str(w.get("kind")), str(w.get("name")))
            for w in (waiting if isinstance(waiting, list) else [])
            if isinstance(w, dict)
        ]
        return SeveralWaiting(text, waiting=rows)
    if cls is RateLimited:
        wait = retry_after((headers or {}).get("Retry-After"), now=now, default=60)
        return RateLimited(text, retry_after=int(60 if wait is None else wait))
    return cls(text)

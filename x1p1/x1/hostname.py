"""The gateway's mDNS host name (X1 §4.3.3), one rule for both sides.

§4.3.3: the gateway's address is ``X1-interface.local``; when that is taken it adds a
sequence number, ``X1-interface-1.local``, and raises it until the name is unique,
``X1-interface-N.local``. The standard sets no upper bound. x1p1 stops at
:data:`MAX_INDEX`: the gateway's TLS leaf names every candidate up to it (so whichever
one it claims is covered), and the converter asks for every one of them directly.

The gateway's advertiser (:mod:`x1p1.gateway.mdns`), its PKI (:mod:`x1p1.gateway.pki`) and
the converter's discovery (:mod:`x1p1.converter.discovery`) all use this module.
"""

from __future__ import annotations

import re

from x1p1.exceptions import ConfigError
from x1p1.x1.api import DEFAULT_HOST_NAME

__all__ = [
    "DEFAULT_HOST_NAME",
    "MAX_INDEX",
    "candidates",
    "check_base",
    "host_name",
    "parse",
]

MAX_INDEX = 9
"""The highest sequence number claimed or looked for: ``X1-interface-9.local``."""

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,57}[A-Za-z0-9])?$")
"""A DNS label of letters, digits and hyphens, with room for ``-NN`` within 63 octets."""
_NAME = re.compile(r"^(?P<base>.+?)(?:-(?P<n>[0-9]+))?\.local\.?$", re.IGNORECASE)


def check_base(base_name: str) -> str:
    """The base label of ``base_name`` (``X1-interface``; a ``.local`` suffix is dropped);
    :class:`~x1p1.exceptions.ConfigError` when it is not a DNS label that leaves room for
    the sequence number."""
    base = base_name.removesuffix(".")
    base = base[: -len(".local")] if base.lower().endswith(".local") else base
    if not _LABEL.match(base):
        raise ConfigError(
            f"host name {base_name!r} is not a DNS label: use 1–59 letters, digits and "
            "hyphens, not starting or ending with a hyphen (e.g. X1-interface)"
        )
    return base


def host_name(base: str, index: int) -> str:
    """The ``index``-th host name of §4.3.3: ``X1-interface.local``, ``X1-interface-1.local``…"""
    if index < 0:
        raise ValueError("index must be >= 0")
    return f"{base}.local" if index == 0 else f"{base}-{index}.local"


def candidates(base_name: str = DEFAULT_HOST_NAME, max_index: int = MAX_INDEX) -> list[str]:
    """Every host name the gateway may claim, in the order it tries them (§4.3.3)."""
    base = check_base(base_name)
    return [host_name(base, i) for i in range(max_index + 1)]


def parse(name: str) -> tuple[str, int] | None:
    """``(base, index)`` of a ``.local`` host name (``X1-interface-2.local`` → ``(
    "X1-interface", 2)``), or None when it is not one."""
    match = _NAME.match(name)
    if match is None:
        return None
    return match["base"], int(match["n"] or 0)

"""File descriptors for every x1p1 daemon: the gateway and the converter share this rule.

A daemon that serves connections from the home network must never run out of
descriptors for what it owns (docs/reliability.md, "A hostile home network"; for the
converter, docs/x1-api.md, "What the converter tolerates"). At start,
:func:`raise_nofile_limit` raises the soft ``RLIMIT_NOFILE`` to the hard limit (any
process may), and :func:`connection_budget` says how many connections fit below that
limit while a reserve stays free for the daemon's own files and sockets.
"""

from __future__ import annotations

import logging
import os
import resource

__all__ = ["connection_budget", "open_descriptors", "raise_nofile_limit"]

log = logging.getLogger(__name__)

UNLIMITED = 1 << 20
"""What an unlimited ``RLIMIT_NOFILE`` counts as."""


def raise_nofile_limit() -> int:
    """Raise the soft descriptor limit to the hard one (a process may, unprivileged);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, hard, exc)
    return soft if soft != resource.RLIM_INFINITY else UNLIMITED


def open_descriptors() -> int:
    """The descriptors this process has open now (0 where ``/proc`` cannot tell)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def connection_budget(nofile: int, in_use: int, reserve: int) -> int:
    """Connections that fit below ``nofile`` descriptors when ``in_use`` are open and
    ``reserve`` must stay free (never below 0)."""
    return max(0, nofile - in_use - reserve)

"""Give the memory that start-up used and freed back to the system (glibc only).

Starting the converter reads the config and the pairing, builds the TLS context from the
saved CA, imports and handshakes: work that allocates a few megabytes and frees them
again. glibc's allocator keeps such freed memory in the process, so it stayed resident
for as long as the daemon ran: about 2.8 MB of the converter's resident memory at 1 Hz
(docs/performance.md). Once the first connection is up, :func:`release_free_memory`
collects garbage and asks glibc (``malloc_trim``) to hand the free pages back. Elsewhere
(musl, macOS) it does nothing.
"""

from __future__ import annotations

import gc
import logging
import sys

__all__ = ["release_free_memory"]

log = logging.getLogger(__name__)


def release_free_memory() -> bool:
    """Collect garbage and return free heap pages to the system; True if glibc did."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to ask
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    released = bool(trim(0))
    log.debug("returned free memory to the system: %s", released)
    return released

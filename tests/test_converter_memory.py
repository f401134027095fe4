"""Start-up's freed memory goes back to the system (x1p1/converter/memory.py)."""

from __future__ import annotations

import sys

import pytest

from x1p1.converter.memory import release_free_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_pages_go_back_to_the_system() -> None:
    def rss_kb() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

    blocks = [bytearray(2000) for _ in range(20000)]  # 40 MB of heap in small blocks
    keep = blocks[-1]
    del blocks
    before = rss_kb()
    assert release_free_memory()
    assert rss_kb() < before - 10_000
    assert len(keep) == 2000

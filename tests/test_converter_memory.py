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


def test_a_legacy_converter_does_not_import_the_realtime_modules() -> None:
    """Legacy P1 never needs the realtime reader, the builder or the OBIS registry
    (docs/performance.md): the supervisor imports them only when the source is realtime."""
    import subprocess

    code = (
        "import sys\n"
        "from x1p1.converter.supervisor import Converter\n"
        "print(sorted(m for m in sys.modules if m in {"
        "'x1p1.x1.realtime', 'x1p1.x1.realtime_telegram', 'x1p1.x1.obis',"
        " 'x1p1.p1.dsmr5', 'zoneinfo'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"

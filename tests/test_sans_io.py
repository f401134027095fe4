"""The sans-I/O cores import no I/O library (architecture.md, "Layout").

``x1p1.p1`` and ``x1p1.x1`` turn bytes and times into events and values; sockets, TLS,
event loops and serial ports belong to the converter's and the gateway's adapters. Every
module of both packages is imported in a fresh interpreter, which must then hold none of
those modules.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("ssl", "_ssl", "socket", "_socket", "asyncio", "selectors", "serial")

_PROBE = """
import importlib, json, pkgutil, sys
names = []
for package in ("x1p1.p1", "x1p1.x1"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        names.append(info.name)
        importlib.import_module(info.name)
print(json.dumps({"modules": names, "loaded": sorted(sys.modules)}))
"""


def _probe(code: str) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


def test_p1_and_x1_import_no_io_library() -> None:
    result = _probe(_PROBE)
    assert "x1p1.p1.reader" in result["modules"] and "x1p1.x1.api" in result["modules"]
    loaded = set(result["loaded"])
    assert [name for name in FORBIDDEN if name in loaded] == []


@pytest.mark.parametrize("module", ["x1p1.converter.tls", "x1p1.converter.pairing"])
def test_the_probe_sees_an_adapter_import_ssl(module: str) -> None:
    """The same probe on an adapter finds ``ssl``: the check above can fail."""
    result = _probe(f"import {module}\n" + _PROBE)
    assert "ssl" in result["loaded"]

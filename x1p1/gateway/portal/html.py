"""Server-side HTML of the portal: escaping, the page layout, and the static assets.

Pages are rendered on the gateway (X1 §9.1) with :class:`string.Template` and small
helpers, then enhanced by the portal's own scripts; every page works without JavaScript
except the moving charts. Everything a page loads comes from the gateway itself: the
portal's own CSS, scripts and icon (package data of :mod:`x1p1.gateway.portal`, served
under a URL that carries a hash of their content, so they can be cached for a year) and
the charting library ``plotly.min.js`` as the installed ``plotly`` package ships it (no
copy of it in this repository), under ``/portal/vendor/plotly-<version>.min.js``.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib.metadata
import importlib.util
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from x1p1.exceptions import StateError

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_PREFIX = "/portal/static"
VENDOR_PREFIX = "/portal/vendor"

CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def esc(value: object) -> str:
    """Text (or a number) made safe for HTML text and quoted attribute values."""
    return html.escape(str(value), quote=True)


def json_script(element_id: str, data: Any) -> str:
    """Data for the page's scripts, in a ``<script type="application/json">`` that is never
    run; ``<``, ``>`` and ``&`` are escaped so no text in it can end the element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def template(name: str) -> Template:
    try:
        return Template((TEMPLATES_DIR / name).read_text(encoding="utf-8"))
    except OSError as exc:
        raise StateError(f"the portal's template {name} is missing: {exc}") from None


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@dataclass
class Assets:
    """The portal's static files, read once, each under a URL with a hash of its content."""

    files: dict[str, Asset] = field(default_factory=dict)
    version: str = ""

    @classmethod
    def load(cls, directory: Path = STATIC_DIR) -> Assets:
        files: dict[str, Asset] = {}
        digest = hashlib.sha256()
        try:
            paths = sorted(p for p in directory.iterdir() if p.suffix in CONTENT_TYPES)
            for path in paths:
                body = path.read_bytes()
                digest.update(path.name.encode() + b"\0" + body)
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                files[path.name] = Asset(body, CONTENT_TYPES[path.suffix], etag)
        except OSError as exc:
            raise StateError(f"the portal's static files are missing: {exc}") from None
        return cls(files, digest.hexdigest()[:12])

    def url(self, name: str) -> str:
        if name not in self.files:
            raise KeyError(f"no static file {name!r}")
        return f"{STATIC_PREFIX}/{self.version}/{name}"


class Plotly:
    """``plotly.min.js`` from the installed ``plotly`` package (its ``package_data``),
    read and gzipped once, on first use, off the event loop (the caller's business)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._body: bytes | None = None
        self._gzipped: bytes | None = None
        self.version = _plotly_version()

    @property
    def url(self) -> str:
        return f"{VENDOR_PREFIX}/plotly-{self.version}.min.js"

    @staticmethod
    def path() -> Path:
        spec = importlib.util.find_spec("plotly")
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            raise StateError("the plotly package is not installed (pip install x1p1[gateway])")
        return Path(locations[0]) / "package_data" / "plotly.min.js"

    def bodies(self) -> tuple[bytes, bytes]:
        """(plain, gzipped): blocking on first call (reads 5 MB and compresses it)."""
        with self._lock:
            if self._body is None or self._gzipped is None:
                try:
                    body = self.path().read_bytes()
                except OSError as exc:
                    raise StateError(f"cannot read plotly.min.js: {exc}") from None
                self._gzipped = gzip.compress(body, compresslevel=6, mtime=0)
                self._body = body
            return self._body, self._gzipped


def _plotly_version() -> str:
    try:
        return importlib.metadata.version("plotly")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def attrs(**values: object) -> str:
    """HTML attributes from keywords (``class_`` for ``class``; True → bare; None/False
    → left out)."""
    out = []
    for name, value in values.items():
        if value is None or value is False:
            continue
        name = name.rstrip("_").replace("_", "-")
        out.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return "".join(out)

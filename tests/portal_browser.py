"""A real browser for the portal's tests: Debian's chromium, headless, driven by Playwright.

Trusting the gateway (honestly): each test gateway makes its own root CA. The browser
gets a fresh profile whose NSS database (``$HOME/.pki/nssdb``, what Chromium on Linux
reads for locally trusted roots) holds that root, added with NSS's ``certutil``. So
Chromium verifies the gateway's chain and host name exactly as a customer's browser does
after installing the root (X1 §10.2); certificate errors are *not* ignored. Without
``certutil`` (Debian package ``libnss3-tools``, which ``scripts/test.sh`` installs) the
browser tests skip and say why, as they do without ``/usr/bin/chromium``.

:func:`open_browser` yields a Playwright ``Browser``; :func:`new_page` a page on the
gateway; :func:`log_in` goes through the login on the meter (the control socket's
``approve``, the meter's button). :func:`audit` runs the accessibility checks in the page:
``lang``, labels of every form control, alternative texts, the heading order, unique
ids, names of links and buttons, and the WCAG AA contrast of every visible text against
its background (computed from the CSS in the browser). :func:`shoot` writes a
screenshot to ``test-artifacts/portal/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "portal"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed (/usr/bin/chromium; apt install chromium)"
    if shutil.which("certutil") is None:
        return (
            "NSS certutil is not installed (apt install libnss3-tools): needed to trust the "
            "gateway's root CA in the browser"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install x1p1[test])"
    return None


needs_browser = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


def trusting_home(ca_path: Path, home: Path) -> Path:
    """A HOME whose NSS database trusts ``ca_path`` as a root for TLS servers."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "certutil",
            "-A",
            "-d",
            f"sql:{nssdb}",
            "-n",
            "x1p1 test root",
            "-t",
            "C,,",
            "-i",
            str(ca_path),
        ],
        check=True,
        capture_output=True,
    )
    return home


@contextmanager
def open_browser(ca_path: Path) -> Iterator[Any]:
    """Chromium, headless, trusting the gateway's root CA (and nothing ignored)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="x1p1-portal-home-") as tmp:
        home = trusting_home(ca_path, Path(tmp))
        env = {**os.environ, "HOME": str(home), "TZ": "Europe/Amsterdam"}
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), args=ARGS, env=env, headless=True
            )
            try:
                yield browser
            finally:
                browser.close()


def new_page(
    browser: Any, *, locale: str = "en-GB", phone: bool = False, accept_downloads: bool = False
) -> Any:
    """A page in a new context (its own cookies). ``phone``: a 390×844 touch screen."""
    options: dict[str, Any] = {
        "locale": locale,
        "ignore_https_errors": False,
        "accept_downloads": accept_downloads,
        "timezone_id": "Europe/Amsterdam",
    }
    if phone:
        options.update(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
        )
    else:
        options.update(viewport={"width": 1280, "height": 900})
    context = browser.new_context(**options)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.x1_errors = errors  # what the page's scripts complained about
    return page


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, step: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something true (for things outside the page)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {condition}")
        time.sleep(step)


def log_in(page: Any, gw: Any, *, approve: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Open the portal, let its login request reach the meter, press the meter's button,
    and wait for the overview. Returns the request as the meter's display showed it."""
    page.goto(gw.url + "/")
    page.wait_for_selector('[data-login="pending"]')
    shown = wait_for(lambda: [r for r in gw.control.requests() if r.get("kind") == "login"])
    (approve or (lambda: gw.control.approve(shown[-1]["request_id"])))()
    page.wait_for_url(gw.url + "/", timeout=20_000)
    page.wait_for_selector("nav a[aria-current=page]")
    return dict(shown[-1])


def elevate(page: Any, gw: Any, path: str = "/devices") -> None:
    """Ask for admin access on ``path`` and confirm it on the meter (§9.2.2)."""
    page.goto(gw.url + path)
    page.click("section.admin form[action='/admin/elevate'] button")
    page.wait_for_selector('section.admin[data-admin="pending"]')
    asked = wait_for(lambda: [r for r in gw.control.requests() if r.get("kind") == "elevation"])
    gw.control.approve(asked[-1]["request_id"])
    page.wait_for_selector('section.admin[data-admin="active"]', timeout=20_000)


def shoot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """A screenshot of the page as ``test-artifacts/portal/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


AUDIT_JS = r"""
() => {
  const problems = [];
  const visible = (el) => {
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.display === "none") return false;
    const box = el.getBoundingClientRect();
    return box.width > 1 && box.height > 1 && el.getClientRects().length > 0;
  };
  const name = (el) => {
    const label = el.getAttribute("aria-label");
    if (label && label.trim()) return label.trim();
    const by = el.getAttribute("aria-labelledby");
    if (by) return by.split(/\s+/).map((id) => document.getElementById(id)?.textContent || "")
                     .join(" ").trim();
    return (el.textContent || "").trim() || el.getAttribute("title") || "";
  };
  // the document's language
  const lang = document.documentElement.getAttribute("lang");
  if (!lang || !/^(nl|en)$/.test(lang)) problems.push(`html lang is ${lang}`);
  if (!document.title.trim()) problems.push("no title");
  // every form control has a label
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden" || el.type === "submit" || el.type === "button") continue;
    const labelled = (el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`))
      || el.closest("label") || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
    if (!labelled) problems.push(`unlabelled ${el.tagName} ${el.name}`);
  }
  // images have alternative text
  for (const img of document.querySelectorAll("img")) {
    if (!img.hasAttribute("alt")) problems.push(`img without alt: ${img.src}`);
  }
  // charts are images with a name
  for (const chart of document.querySelectorAll(".chart")) {
    if (chart.getAttribute("role") !== "img" || !name(chart)) problems.push("chart unnamed");
  }
  // links and buttons have names
  for (const el of document.querySelectorAll("a[href], button")) {
    if (el.closest(".chart")) continue;
    if (!name(el)) problems.push(`nameless ${el.tagName}: ${el.outerHTML.slice(0, 80)}`);
  }
  // headings start at h1 and never skip a level
  let last = 0;
  const headings = [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")];
  if (!headings.length || headings[0].tagName !== "H1") problems.push("no h1 first");
  if (document.querySelectorAll("h1").length !== 1) problems.push("not exactly one h1");
  for (const h of headings) {
    const level = Number(h.tagName[1]);
    if (level > last + 1) {
      problems.push(`heading skips from h${last} to ${h.tagName}: ${h.textContent}`);
    }
    last = level;
  }
  // ids are unique
  const ids = {};
  for (const el of document.querySelectorAll("[id]")) ids[el.id] = (ids[el.id] || 0) + 1;
  for (const [id, n] of Object.entries(ids)) if (n > 1) problems.push(`id ${id} used ${n} times`);
  // a skip link and a main landmark
  if (!document.querySelector("a.skip[href='#main']") || !document.querySelector("main#main")) {
    problems.push("no skip link to main");
  }
  // contrast of visible text (WCAG 2.1 AA: 4.5:1, large text 3:1)
  const rgb = (text) => {
    const m = text.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const [r, g, b, a] = m[1].split(",").map((x) => parseFloat(x));
    return { r, g, b, a: a === undefined ? 1 : a };
  };
  const lum = ({ r, g, b }) => {
    const f = (v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c && c.a > 0.5) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const checked = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const text = walker.currentNode;
    if (!text.textContent.trim()) continue;
    const el = text.parentElement;
    const skipped = ".chart, script, noscript, .visually-hidden, dialog:not([open])";
    if (!el || el.closest(skipped)) continue;
    if (!visible(el)) continue;
    const style = getComputedStyle(el);
    const fg = rgb(style.color);
    const bg = background(el);
    const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(style.fontSize);
    const bold = Number(style.fontWeight) >= 700;
    const large = size >= 24 || (bold && size >= 18.66);
    checked.push(ratio);
    if (ratio < (large ? 3 : 4.5)) {
      problems.push(`contrast ${ratio.toFixed(2)} for "${text.textContent.trim().slice(0, 40)}"`);
    }
  }
  return { problems, texts: checked.length };
}
"""


def audit(page: Any) -> dict[str, Any]:
    """The accessibility checks of the module docstring, run in the page as it is."""
    result: dict[str, Any] = page.evaluate(AUDIT_JS)
    return result


def no_horizontal_scroll(page: Any) -> bool:
    """Whether the page fits its viewport's width (wide tables scroll inside themselves)."""
    return bool(
        page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    )

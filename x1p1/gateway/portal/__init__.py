"""The customer portal (X1 §3.1.5, §9): a local web page on the gateway's HTTPS port.

A customer with a browser on the X1 port logs in by pressing the meter's button (no
password, §5.1.3), sees the metering installation, live and historic use (with CSV
downloads), the devices that read their data and the comlog, manages access after
confirming on the meter (§9.2.2), blocks history (§12.1) and reads the API's
documentation, in Dutch or English, on a phone as on a laptop, with nothing loaded from
outside the gateway.

- :mod:`.routes`: :class:`Portal`, the aiohttp side (pages, forms, cookies, assets);
- :mod:`.pages`: the pages as HTML from plain data; :mod:`.apidocs`: the API page;
- :mod:`.periods`: history periods, use per interval, CSV; :mod:`.i18n`: words, formats;
- :mod:`.html`: escaping, layout, the static files and plotly's own ``plotly.min.js``.

The login, session and elevation rules are the ledger's, :mod:`x1p1.x1.grants` (sans-I/O)
and :mod:`x1p1.gateway.grants` (persisted, on the meter's display).
"""

from x1p1.gateway.portal.routes import LOGIN_COOKIE, PORTAL_KEY, SESSION_COOKIE, Portal

__all__ = ["LOGIN_COOKIE", "PORTAL_KEY", "SESSION_COOKIE", "Portal"]

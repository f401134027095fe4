"""Where a gateway serves each endpoint: the API base and the paths the converter calls.

docs/x1-api.md puts every endpoint under ``/api``, and the embedded gateway advertises
that as TXT ``api=/api`` (X1 §4.3.3). A gateway of another vendor may serve under a
prefix, advertise another ``api=``, or put one endpoint elsewhere, so the converter
takes the base from (strongest first) ``--api-base``, the config's ``api_base``, the
path of a ``--gateway`` URL, the TXT ``api=`` seen when pairing, and the default; and
``token_requests_path`` and ``legacy_p1_path`` override one endpoint each
(docs/config.example.toml). The endpoints' names relative to the base come from the
constants in :mod:`x1p1.x1.api`, their one home.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from x1p1.x1.api import API_PREFIX, LEGACY_P1, METERS, REALTIME, TOKEN, TOKEN_REQUESTS

__all__ = ["ApiPaths", "check_path", "split_endpoint"]

_PATH = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*/?")
_MAX = 200

_SUFFIXES = tuple(
    path.removeprefix(API_PREFIX) for path in (LEGACY_P1, REALTIME, TOKEN_REQUESTS, TOKEN)
)
"""The endpoints below the base: ``/legacy-p1``, ``/realtime``, ``/tokens/requests`` …"""


def check_path(text: str, what: str) -> str:
    """``text`` as a clean absolute path (no trailing ``/``), or ValueError naming ``what``.

    Refused: no leading ``/``, a query or fragment, ``..`` or ``.`` segments, control
    characters, more than 200 characters.
    """
    value = text.strip()
    if value in ("", "/"):
        return ""
    if len(value) > _MAX or not value.startswith("/") or not _PATH.fullmatch(value):
        raise ValueError(
            f"{what} {text!r} is not a path; give one that starts with / such as /api, "
            "without a query, a fragment or spaces"
        )
    if any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"{what} {text!r} may not contain . or .. segments")
    return value.rstrip("/")


def split_endpoint(path: str) -> str:
    """The API base of a URL path that may name an endpoint: ``/x1/api/legacy-p1`` and
    ``/x1/api`` both give ``/x1/api``; ``""`` (no path) gives ``""``."""
    for suffix in _SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


@dataclass(frozen=True, slots=True)
class ApiPaths:
    """The paths the converter calls on one gateway (each already checked)."""

    api_base: str = API_PREFIX
    token_requests_path: str | None = None
    """Overrides ``{api_base}/tokens/requests``."""
    legacy_p1_path: str | None = None
    """Overrides ``{api_base}/legacy-p1``."""

    @classmethod
    def resolve(
        cls,
        *,
        api_base: str | None = None,
        url_base: str | None = None,
        saved_base: str | None = None,
        advertised: str | None = None,
        token_requests_path: str | None = None,
        legacy_p1_path: str | None = None,
    ) -> ApiPaths:
        """The paths ``x1p1 pair``, ``x1p1 run`` and ``x1p1 doctor`` all use; the base is
        the first given of (strongest first) ``api_base`` (``--api-base``, the config's
        ``api_base``), ``url_base`` (the path of a ``--gateway`` URL), ``saved_base`` (the
        base saved when pairing), ``advertised`` (the mDNS TXT ``api=``, X1 §4.3.3;
        ignored when it is not a path: see :meth:`advertised_base`), and ``/api``.
        The first three are already checked (:func:`check_path`)."""
        base = next((b for b in (api_base, url_base, saved_base) if b is not None), None)
        if base is None:
            base = cls.advertised_base(advertised)
        return cls(
            API_PREFIX if base is None else base,
            token_requests_path=token_requests_path,
            legacy_p1_path=legacy_p1_path,
        )

    @staticmethod
    def advertised_base(advertised: str | None) -> str | None:
        """The TXT ``api=`` as a base, or None when absent or not a path."""
        if advertised is None:
            return None
        try:
            return check_path(advertised, "the TXT record api=")
        except ValueError:
            return None

    def _below(self, path: str) -> str:
        return self.api_base + path.removeprefix(API_PREFIX)

    @property
    def token_requests(self) -> str:
        return self.token_requests_path or self._below(TOKEN_REQUESTS)

    def token_request(self, request_id: str) -> str:
        from urllib.parse import quote

        return f"{self.token_requests}/{quote(request_id, safe='')}"

    @property
    def token(self) -> str:
        return self._below(TOKEN)

    @property
    def legacy_p1(self) -> str:
        return self.legacy_p1_path or self._below(LEGACY_P1)

    @property
    def realtime(self) -> str:
        return self._below(REALTIME)

    @property
    def meters(self) -> str:
        return self._below(METERS)

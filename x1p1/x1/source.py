"""Where the converter's telegrams come from: legacy P1 or realtime values (sans-I/O).

X1 §6.2.7: a gateway *can* supply P1 telegrams (``/api/legacy-p1``); nothing obliges
it. X1 §5.1.6: the customer may grant other profiles than the device asked for, and
change them later in the portal. The config's ``source`` (docs/config.example.toml):

- ``legacy-p1``: relay ``/api/legacy-p1`` byte for byte; the token needs P1.
- ``realtime``: build telegrams from ``/api/realtime`` (:mod:`x1p1.x1.realtime_telegram`); the
  token needs E-REALTIME or PQ-REALTIME (and G-REALTIME for gas).
- ``auto`` (default): legacy P1 when the token has P1 and the gateway serves it;
  otherwise realtime; back to legacy P1 when it becomes available again.

Everything that decides lives in this file, with ``now`` passed in (architecture.md,
habits 2 and 12): :func:`choose` is the decision table; :class:`SourceMachine` keeps
what the converter knows (the granted profiles, whether the gateway lacks legacy P1) and
says when it next needs to act (:meth:`SourceMachine.deadline`): re-read the token's
profiles (``GET /api/token``) while waiting for a grant or while realtime stands in for
a missing P1, and try legacy P1 again a while after a 404.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from x1p1.x1.profiles import BUILD_PROFILES, Profile, sorted_profiles

__all__ = [
    "GRANT_POLL",
    "GRANT_REREAD_MIN",
    "LEGACY_PROBE",
    "Action",
    "Mode",
    "Source",
    "SourceMachine",
    "choose",
]


class Mode(enum.StrEnum):
    """The config's ``source``."""

    AUTO = "auto"
    LEGACY_P1 = "legacy-p1"
    REALTIME = "realtime"


class Source(enum.StrEnum):
    """The endpoint the converter subscribes to."""

    LEGACY_P1 = "legacy-p1"
    REALTIME = "realtime"


class Action(enum.StrEnum):
    """What :meth:`SourceMachine.expire` asks the adapter to do."""

    READ_TOKEN = "read-token"
    """``GET /api/token`` and report the profiles (:meth:`SourceMachine.token_read`)."""
    PROBE_LEGACY = "probe-legacy"
    """Subscribe to legacy P1 again (the gateway may serve it now)."""


GRANT_POLL = 60.0
"""Seconds between reads of the token's profiles while they decide nothing good: no
usable profile, or realtime standing in for a missing P1 (the portal may grant it back)."""
GRANT_REREAD_MIN = 5.0
"""A refusal (403, close 4403) re-reads the profiles at once, but never sooner than this
after the last read; each refusal in a row with no connection opened in between doubles
it, up to :data:`GRANT_POLL` (a gateway whose grant reads the same as it refuses gets a
handshake a minute, not a loop)."""
LEGACY_PROBE = 900.0
"""After a 404 on ``/api/legacy-p1``, ``auto`` tries it again every 15 minutes."""

_E, _PQ, _G = Profile.E_REALTIME, Profile.PQ_REALTIME, Profile.G_REALTIME


def _realtime_words(granted: frozenset[Profile]) -> str:
    return ", ".join(sorted_profiles(granted & {_E, _PQ, _G}))


def choose(
    mode: Mode, granted: frozenset[Profile], legacy_missing: bool
) -> tuple[Source | None, str]:
    """The source for what is known, and why (one sentence); None when the token can
    read neither (the converter then waits for a new grant or pairing).

    ========  ========  ==============  =================  ===========
    mode      P1        legacy served   E- or PQ-REALTIME  source
    ========  ========  ==============  =================  ===========
    auto      yes       yes (or 404     any / no           legacy-p1
                        and no realtime)
    auto      yes       no (404)        yes                realtime
    auto      no        any             yes                realtime
    auto      no        any             no                 none
    legacy    yes       any             any                legacy-p1
    legacy    no        any             any                none
    realtime  any       any             yes                realtime
    realtime  any       any             no                 none
    ========  ========  ==============  =================  ===========
    """
    p1 = Profile.P1 in granted
    build = bool(granted & BUILD_PROFILES)
    if mode is Mode.LEGACY_P1:
        if p1:
            return Source.LEGACY_P1, "source = legacy-p1"
        return None, "source = legacy-p1 but the token lacks the P1 profile"
    if mode is Mode.REALTIME:
        if build:
            return Source.REALTIME, f"source = realtime ({_realtime_words(granted)})"
        return None, "source = realtime but the token has neither E-REALTIME nor PQ-REALTIME"
    if p1 and not (legacy_missing and build):
        return Source.LEGACY_P1, "the token has P1 and the gateway serves legacy P1"
    if build:
        why = (
            "the gateway has no /api/legacy-p1 (HTTP 404)"
            if p1
            else "the token lacks the P1 profile"
        )
        return Source.REALTIME, f"{why}: telegrams built from {_realtime_words(granted)}"
    return None, "the token has neither P1 nor E-REALTIME or PQ-REALTIME"


@dataclass
class SourceMachine:
    """What decides the source, and when to look again (no I/O, no clock).

    ``scale`` multiplies the waiting times (tests run the real schedule faster)."""

    mode: Mode = Mode.AUTO
    granted: frozenset[Profile] = field(default_factory=frozenset)
    scale: float = 1.0
    legacy_missing: bool = False
    """The gateway answered 404 on ``/api/legacy-p1`` (until the next probe)."""
    active: Source | None = None
    reason: str = "starting"
    read_token_at: float | None = None
    probe_legacy_at: float | None = None
    last_read_at: float | None = None
    switches: int = 0
    """Changes of the active source so far."""
    refusals: int = 0
    """Refusals (403, close 4403) since a connection last opened."""

    def __post_init__(self) -> None:
        self.active, self.reason = choose(self.mode, self.granted, self.legacy_missing)

    # -- events --------------------------------------------------------------------------

    def new_pairing(self, granted: Iterable[Profile]) -> bool:
        """``token.json`` changed: start afresh with this grant. True if the source moved."""
        self.legacy_missing = False
        self.probe_legacy_at = self.read_token_at = None
        self.refusals = 0
        self.granted = frozenset(granted)
        return self._decide(None)

    def token_read(self, granted: Iterable[Profile], now: float) -> bool:
        """``GET /api/token`` answered with these profiles. True if the source moved."""
        self.granted = frozenset(granted)
        self.last_read_at = now
        self.read_token_at = None
        return self._decide(now)

    def token_unread(self, now: float) -> None:
        """``GET /api/token`` failed: try again in :data:`GRANT_POLL` s."""
        self.last_read_at = now
        self.read_token_at = now + GRANT_POLL * self.scale

    def forbidden(self, now: float) -> None:
        """A 403 or a close 4403: the grant changed; read it again (at once, but never
        sooner than :data:`GRANT_REREAD_MIN` s after the last read, doubled for each
        refusal in a row)."""
        self.refusals += 1
        spacing = min(GRANT_POLL, GRANT_REREAD_MIN * 2.0 ** min(self.refusals - 1, 8))
        soonest = now
        if self.last_read_at is not None:
            soonest = max(now, self.last_read_at + spacing * self.scale)
        if self.read_token_at is None or soonest < self.read_token_at:
            self.read_token_at = soonest

    def opened(self) -> None:
        """A subscription opened: the refusals in a row are over."""
        self.refusals = 0

    def legacy_not_found(self, now: float) -> bool:
        """The gateway answered 404 on ``/api/legacy-p1``. True if the source moved (in
        ``auto`` with a realtime profile); legacy P1 is tried again after
        :data:`LEGACY_PROBE` s."""
        if self.mode is not Mode.AUTO:
            return False
        self.legacy_missing = True
        self.probe_legacy_at = now + LEGACY_PROBE * self.scale
        return self._decide(now)

    def _decide(self, now: float | None) -> bool:
        old = self.active
        self.active, self.reason = choose(self.mode, self.granted, self.legacy_missing)
        if now is not None and self._waiting_for_grant():
            if self.read_token_at is None:
                self.read_token_at = now + GRANT_POLL * self.scale
        elif not self._waiting_for_grant():
            self.read_token_at = None
        if self.active is not old:
            self.switches += 1
            return True
        return False

    def _waiting_for_grant(self) -> bool:
        """Whether a change of grant in the portal would make things better."""
        if self.active is None:
            return True
        return (
            self.mode is Mode.AUTO
            and self.active is Source.REALTIME
            and Profile.P1 not in self.granted
        )

    # -- time ----------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When :meth:`expire` has something to do (None: only an event)."""
        times = [t for t in (self.read_token_at, self.probe_legacy_at) if t is not None]
        return min(times) if times else None

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def expire(self, now: float) -> Action | None:
        """The deadline has come: read the token, or try legacy P1 again (then the
        source is legacy P1 until another 404 says otherwise)."""
        if self.read_token_at is not None and now >= self.read_token_at:
            self.read_token_at = None
            return Action.READ_TOKEN
        if self.probe_legacy_at is not None and now >= self.probe_legacy_at:
            self.probe_legacy_at = None
            self.legacy_missing = False
            if self._decide(now):
                return Action.PROBE_LEGACY
        return None

    def status(self) -> dict[str, object]:
        """``x1p1 status``: the mode, the source in use (None: none usable), and why."""
        return {
            "mode": self.mode.value,
            "active": self.active.value if self.active is not None else None,
            "reason": self.reason,
            "granted": sorted_profiles(self.granted),
            "switches": self.switches,
        }

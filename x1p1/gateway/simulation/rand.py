"""Counter-based randomness: every random number is a pure function of where it is used.

The simulation has no sequential random state. A value is drawn from a key made of the
seed, a tag saying what it is for and the indices saying where (day, block, minute,
second), so the same seed and the same instant give the same value whatever was asked
before, and any moment can be computed without computing the ones before it.

:func:`key` hashes the parts with the SplitMix64 finalizer; :func:`rng` seeds a
:class:`random.Random` from such a key for the places that draw many numbers at once (a
day's load template, a day's clouds), always in the same order.
"""

from __future__ import annotations

import random

MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15

# Tags: what a random number is for (any distinct integers).
IDS = 1
BASE = 2
HOUSEHOLD = 3
TEMPLATE = 4
VARIANT = 5
CLOUDS = 6
FLICKER = 7
JITTER = 8
VOLTAGE = 9
GRID = 10
QUALITY = 11
GAS = 12
WEATHER = 13
PV = 14


def mix(x: int) -> int:
    """SplitMix64's finalizer: a well-spread 64-bit hash of a 64-bit integer."""
    x = (x + _GOLDEN) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def key(*parts: int) -> int:
    """A 64-bit hash of a sequence of integers (negative ones included)."""
    h = 0x243F6A8885A308D3
    for part in parts:
        h = mix(h ^ (part & MASK))
    return h


def unit(*parts: int) -> float:
    """A float in [0, 1) determined by ``parts``."""
    return (key(*parts) >> 11) * (1.0 / (1 << 53))


def rng(*parts: int) -> random.Random:
    """A :class:`random.Random` seeded from ``parts``: draw from it in a fixed order."""
    return random.Random(key(*parts))


def apportion(total: int, weights: list[int]) -> list[int]:
    """Split the integer ``total`` into parts proportional to ``weights``, exactly.

    Largest remainder method: each part is ``total * w // sum`` and the units left over go
    to the largest remainders (the earlier index on ties). The parts always sum to
    ``total``; all weights zero splits evenly.
    """
    if total < 0:
        raise ValueError("apportion() splits a non-negative total")
    n = len(weights)
    if n == 0:
        if total:
            raise ValueError("apportion() needs somewhere to put a non-zero total")
        return []
    if any(w < 0 for w in weights):
        raise ValueError("apportion() weights must not be negative")
    whole = sum(weights)
    if whole == 0:
        weights, whole = [1] * n, n
    parts = [total * w // whole for w in weights]
    left = total - sum(parts)
    if left:
        order = sorted(range(n), key=lambda i: (-(total * weights[i] % whole), i))
        for i in order[:left]:
            parts[i] += 1
    return parts

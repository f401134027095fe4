"""The history rate limit (X1 §7.3; x1-api.md: a bucket of 10, one more every 10 s)."""

from __future__ import annotations

import pytest

from x1p1.exceptions import RateLimited
from x1p1.x1.ratelimit import CAPACITY, REFILL_SECONDS, RateLimiter


def drain(limiter: RateLimiter, key: str, now: float) -> int:
    passed = 0
    while True:
        try:
            limiter.take(key, now)
        except RateLimited:
            return passed
        passed += 1


def test_the_numbers_of_x1_api_md() -> None:
    assert CAPACITY == 10
    assert REFILL_SECONDS == 10.0


def test_a_full_bucket_lets_ten_pass_then_refuses_with_retry_after() -> None:
    limiter = RateLimiter()
    assert drain(limiter, "t", 1000.0) == 10
    with pytest.raises(RateLimited) as info:
        limiter.take("t", 1000.0)
    assert info.value.retry_after == 10
    assert info.value.headers() == {"Retry-After": "10"}
    assert info.value.status == 429
    assert info.value.body()["error"] == "rate-limited"


@pytest.mark.parametrize(
    ("elapsed", "retry_after"),
    [(0.0, 10), (0.5, 10), (1.0, 9), (4.2, 6), (9.0, 1), (9.99, 1)],
)
def test_retry_after_counts_whole_seconds_up(elapsed: float, retry_after: int) -> None:
    limiter = RateLimiter()
    drain(limiter, "t", 0.0)
    with pytest.raises(RateLimited) as info:
        limiter.take("t", elapsed)
    assert info.value.retry_after == retry_after


def test_one_more_every_ten_seconds() -> None:
    limiter = RateLimiter()
    drain(limiter, "t", 0.0)
    limiter.take("t", 10.0)
    with pytest.raises(RateLimited):
        limiter.take("t", 10.0)
    limiter.take("t", 20.0)
    # Waiting 35 s after that gives three and a half: three pass.
    assert drain(limiter, "t", 55.0) == 3


def test_retry_after_is_honest_waiting_that_long_passes() -> None:
    limiter = RateLimiter()
    drain(limiter, "t", 0.0)
    now = 3.7
    with pytest.raises(RateLimited) as info:
        limiter.take("t", now)
    limiter.take("t", now + info.value.retry_after)


def test_the_bucket_never_holds_more_than_ten() -> None:
    limiter = RateLimiter()
    limiter.take("t", 0.0)
    assert drain(limiter, "t", 10_000.0) == 10


def test_keys_are_independent() -> None:
    limiter = RateLimiter()
    drain(limiter, "a", 0.0)
    assert drain(limiter, "b", 0.0) == 10


def test_a_clock_going_back_refills_nothing() -> None:
    limiter = RateLimiter()
    drain(limiter, "t", 100.0)
    with pytest.raises(RateLimited):
        limiter.take("t", 50.0)
    with pytest.raises(RateLimited):
        limiter.take("t", 105.0)
    limiter.take("t", 110.0)


def test_forget_and_full_buckets_are_dropped() -> None:
    limiter = RateLimiter()
    for n in range(50):
        limiter.take(f"k{n}", 0.0)
    assert len(limiter) == 50
    limiter.forget("k0")
    assert len(limiter) == 49
    limiter.take("other", 100.0)  # everything else has refilled: swept
    assert len(limiter) == 1
    assert limiter.available("k1", 100.0) == 10.0


def test_other_sizes() -> None:
    limiter = RateLimiter(capacity=2, refill_seconds=0.5)
    assert drain(limiter, "t", 0.0) == 2
    with pytest.raises(RateLimited) as info:
        limiter.take("t", 0.0)
    assert info.value.retry_after == 1  # half a second, rounded up
    with pytest.raises(ValueError):
        RateLimiter(capacity=0)

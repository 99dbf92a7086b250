"""Reconnect backoff: capped exponential growth with full jitter."""

from __future__ import annotations

import random

from agent.transport.base import Backoff


class _Extreme(random.Random):
    """Always draws the top (or bottom) of the range, to expose the ceilings."""

    def __init__(self, *, top: bool) -> None:
        super().__init__(0)
        self.top = top
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return b if self.top else a


def test_the_ceiling_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    """Each ceiling is min(cap, initial * 2^n)."""
    backoff = Backoff(0.5, 10.0, rng=_Extreme(top=True))

    delays = [backoff.next_delay() for _ in range(8)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_full_jitter_draws_from_zero_to_the_ceiling() -> None:
    """The lower bound is always zero, so a fleet's retries spread out."""
    rng = _Extreme(top=False)
    backoff = Backoff(1.0, 60.0, rng=rng)

    delays = [backoff.next_delay() for _ in range(5)]

    assert delays == [0.0] * 5
    assert rng.ranges == [(0, 1.0), (0, 2.0), (0, 4.0), (0, 8.0), (0, 16.0)]


def test_delays_stay_within_their_bounds_for_ever() -> None:
    """Thousands of failures in a row never exceed the cap (no overflow, no negative delay)."""
    backoff = Backoff(1.0, 120.0, rng=random.Random(7))

    delays = [backoff.next_delay() for _ in range(5000)]

    assert all(0 <= d <= 120.0 for d in delays)
    assert max(delays[-100:]) > 60  # the draws really spread over the capped range


def test_reset_starts_over_after_a_connection_that_held() -> None:
    """After reset the next ceiling is the initial delay again."""
    backoff = Backoff(1.0, 30.0, rng=_Extreme(top=True))
    for _ in range(6):
        backoff.next_delay()

    backoff.reset()

    assert backoff.next_delay() == 1.0


def test_an_initial_delay_above_the_cap_is_capped() -> None:
    """A configuration with initial > cap still respects the cap."""
    backoff = Backoff(60.0, 5.0, rng=_Extreme(top=True))

    assert backoff.next_delay() == 5.0

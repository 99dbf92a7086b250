"""Progress reports: one per 10 % step, at most one per second per device, never backwards."""

from __future__ import annotations

from typing import Any

from agent.core.model import UpgradeProgress, UpgradeStatus
from agent.upgrade import machine
from agent.upgrade.progress import ProgressReporter, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _reporter(
    detail: dict[str, Any], limiter: RateLimiter, sent: list[UpgradeProgress]
) -> ProgressReporter:
    async def send(report: UpgradeProgress) -> None:
        sent.append(report)

    async def persist() -> None:
        return None

    return ProgressReporter(
        device_id="dev",
        version="2.0",
        current_version="1.0",
        detail=detail,
        step=10,
        limiter=limiter,
        send=send,
        persist=persist,
    )


async def test_one_report_per_ten_percent_step() -> None:
    """Every percent from 0 to 100 yields eleven reports (0, 10, ..., 100), not a hundred."""
    sent: list[UpgradeProgress] = []
    reporter = _reporter({}, RateLimiter(0.0), sent)
    for percent in range(101):
        await reporter.update(machine.DOWNLOADING, percent)
    assert [r.phase_progress for r in sent] == list(range(0, 101, 10))
    assert all(r.phase == "downloading" and r.version == "1.0" for r in sent)


async def test_at_most_one_report_per_second_per_device() -> None:
    """Reports closer than the interval are dropped; the next due one goes out."""
    clock = Clock()
    sent: list[UpgradeProgress] = []
    reporter = _reporter({}, RateLimiter(1.0, clock), sent)
    await reporter.update(machine.DOWNLOADING, 10)
    clock.now = 0.5
    await reporter.update(machine.DOWNLOADING, 20)
    clock.now = 1.2
    await reporter.update(machine.DOWNLOADING, 30)
    assert [r.phase_progress for r in sent] == [10, 30]


async def test_an_earlier_phase_or_lower_figure_is_never_reported_again() -> None:
    """After installing has been reported, downloading and lower figures are not."""
    detail: dict[str, Any] = {}
    sent: list[UpgradeProgress] = []
    reporter = _reporter(detail, RateLimiter(0.0), sent)
    await reporter.update(machine.INSTALLING, 50)
    await reporter.update(machine.DOWNLOADING, 100)
    await reporter.update(machine.INSTALLING, 40)
    assert [(r.phase, r.phase_progress) for r in sent] == [("installing", 50)]
    # A new reporter over the same journaled detail (after a restart) remembers.
    again: list[UpgradeProgress] = []
    await _reporter(detail, RateLimiter(0.0), again).update(machine.VERIFYING, 100)
    assert again == []


async def test_overall_progress_rises_with_the_phases() -> None:
    """The 0-100 figure grows from phase to phase and only the final success says 100."""
    sent: list[UpgradeProgress] = []
    reporter = _reporter({}, RateLimiter(0.0), sent)
    for state in (machine.DOWNLOADING, machine.VERIFYING, machine.INSTALLING, machine.CONFIRMING):
        await reporter.update(state, 0)
        await reporter.update(state, 100)
    figures = [r.progress for r in sent]
    assert figures == sorted(figures)
    assert max(figures) < 100
    final = reporter.final(UpgradeStatus.SUCCESS, "ok", version="2.0")
    assert (final.progress, final.version, final.phase) == (100, "2.0", "done")

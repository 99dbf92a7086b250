"""Upgrade progress reports: forward only, rate-limited.

A report goes out when the phase changes or the phase's own progress crosses the next
``progress_step`` (10 % by default), and at most once per ``report_interval_s`` per device;
the final result is never held back. A report never names an earlier phase, nor a lower
figure within the same phase, than one already sent, across restarts too: the high-water
mark is kept in the subtask's journaled detail.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent.core.model import UpgradePhase, UpgradeProgress, UpgradeStatus
from agent.upgrade import machine

# Where each phase sits in the overall 0-100 figure: (start, end).
_SPAN: dict[str, tuple[int, int]] = {
    machine.CHECKING: (0, 0),
    machine.DOWNLOADING: (0, 70),
    machine.VERIFYING: (70, 75),
    machine.INSTALLING: (75, 95),
    machine.ACTIVATING: (95, 96),
    machine.REBOOTING: (96, 97),
    machine.CONFIRMING: (97, 99),
    machine.ROLLING_BACK: (99, 99),
}
_REPORTED_PHASE: dict[str, UpgradePhase] = {
    machine.RECEIVED: "checking",
    machine.CHECKING: "checking",
    machine.DOWNLOADING: "downloading",
    machine.VERIFYING: "verifying",
    machine.INSTALLING: "installing",
    machine.ACTIVATING: "activating",
    machine.REBOOTING: "rebooting",
    machine.CONFIRMING: "confirming",
    machine.ROLLING_BACK: "confirming",
}

Send = Callable[[UpgradeProgress], Awaitable[None]]
Persist = Callable[[], Awaitable[None]]


class RateLimiter:
    """At most one report per ``interval`` seconds per device (shared by all its upgrades)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}

    def allow(self, device_id: str) -> bool:
        """Whether a report for ``device_id`` may go now (and note it if so)."""
        now = self._clock()
        last = self._last.get(device_id)
        if last is not None and now - last < self.interval:
            return False
        self._last[device_id] = now
        return True


class ProgressReporter:
    """Reports one upgrade's progress; ``detail["reported"]`` holds the high-water mark."""

    def __init__(
        self,
        *,
        device_id: str,
        version: str,
        current_version: str,
        detail: dict[str, Any],
        step: int,
        limiter: RateLimiter,
        send: Send,
        persist: Persist,
        enabled_phases: frozenset[str] | None = None,
    ) -> None:
        self.device_id = device_id
        self.version = version
        self.current_version = current_version
        self._detail = detail
        self._step = step
        self._limiter = limiter
        self._send = send
        self._persist = persist
        self._enabled = enabled_phases

    @property
    def high_water(self) -> tuple[int, int]:
        """(phase rank, phase progress) of the last report sent."""
        rank, percent = self._detail.get("reported", (-1, -1))
        return int(rank), int(percent)

    async def update(self, state: str, percent: int) -> None:
        """Report ``percent`` of phase ``state`` if it is new enough and due."""
        if self._enabled is not None and state not in self._enabled:
            return
        rank = machine.PHASE_ORDER[state]
        percent = max(0, min(100, percent))
        last_rank, last_percent = self.high_water
        if (rank, percent) <= (last_rank, last_percent):
            return
        if rank == last_rank and percent // self._step == last_percent // self._step:
            return
        if not self._limiter.allow(self.device_id):
            return
        start, end = _SPAN.get(state, (0, 0))
        report = UpgradeProgress(
            device_id=self.device_id,
            phase=_REPORTED_PHASE.get(state, "checking"),
            progress=start + (end - start) * percent // 100,
            phase_progress=percent,
            version=self.current_version,
            target_version=self.version,
            description=f"{state} {percent}%",
        )
        self._detail["reported"] = (rank, percent)
        await self._send(report)
        await self._persist()

    def final(self, status: str, description: str, *, version: str) -> UpgradeProgress:
        """The final report (never rate-limited; sent with the subtask's end)."""
        done = status == UpgradeStatus.SUCCESS
        _, percent = self.high_water
        return UpgradeProgress(
            device_id=self.device_id,
            phase="done" if done else "failed",
            status=status,
            progress=100 if done else max(0, min(100, percent)),
            phase_progress=100 if done else max(0, min(100, percent)),
            version=version,
            target_version=self.version,
            description=description,
        )

"""Each task's ``task_progress`` sampled over time, for the console's live progress chart.

The service samples every open task once a second (and each task once more when it has
finished). A task keeps at most ``max_points`` samples: when full, every other sample is
dropped and the task is sampled half as often from then on, so a long task's whole run stays
visible at a coarser grain in bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.sim.emulator import records as r

# What a sample holds besides its time: subtasks ended, succeeded, failed, in flight.
FIELDS = ("ended", "success", "fail", "processing")


class _Series:
    __slots__ = ("closed", "every", "last", "points")

    def __init__(self, every: float) -> None:
        self.points: list[tuple[float, int, int, int, int]] = []
        self.every = every  # seconds between samples (doubles as the series is thinned)
        self.last = float("-inf")
        self.closed = False  # the sample after the task finished is taken


class ProgressSeries:
    """Bounded samples of every task's progress."""

    def __init__(self, *, interval_s: float = 1.0, max_points: int = 240) -> None:
        self.interval_s = interval_s
        self.max_points = max_points
        self._series: dict[str, _Series] = {}

    def sample(self, tasks: Iterable[r.Task], now: float) -> None:
        """Take a sample of each task that is due for one."""
        seen: set[str] = set()
        for task in tasks:
            seen.add(task.task_id)
            series = self._series.get(task.task_id)
            if series is None:
                series = self._series[task.task_id] = _Series(self.interval_s)
            finished = task.finished_at is not None
            if series.closed and finished:
                continue  # (a retried task opens again, and is sampled again)
            if not finished and now - series.last < series.every:
                continue
            counts = task.counts
            series.points.append(
                (
                    now,
                    task.terminal,
                    counts[r.SUCCESS],
                    counts[r.FAIL],
                    counts[r.PROCESSING],
                )
            )
            series.last = now
            series.closed = finished
            if len(series.points) > self.max_points:
                # Thin out, keeping the first and the newest; sample half as often from now on.
                thinned = series.points[::2]
                if thinned[-1] is not series.points[-1]:
                    thinned.append(series.points[-1])
                series.points = thinned
                series.every *= 2
        for gone in self._series.keys() - seen:  # deleted tasks
            del self._series[gone]

    def points(self, task_id: str) -> list[dict[str, Any]]:
        """A task's samples, oldest first: ``at`` and the counts in :data:`FIELDS`."""
        series = self._series.get(task_id)
        if series is None:
            return []
        return [dict(zip(("at", *FIELDS), point, strict=True)) for point in series.points]

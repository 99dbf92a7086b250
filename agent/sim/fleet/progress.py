"""Live progress bars, one per task (rich), while a simulation runs on a terminal."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class LiveBars:
    """One bar per task: subtasks ended out of total, with the task's status."""

    def __init__(self, *, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bars: dict[str, Any] = {}
        self._progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]:<15} ok {task.fields[ok]} fail {task.fields[fail]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not self.enabled,
        )

    def __enter__(self) -> LiveBars:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, name: str, *, status: str, progress: dict[str, int]) -> None:
        """Show a task's current state."""
        ended = sum(progress[k] for k in ("success", "fail", "stopped", "removed"))
        fields: dict[str, Any] = {
            "status": status,
            "ok": progress["success"],
            "fail": progress["fail"],
        }
        bar = self._bars.get(name)
        if bar is None:
            bar = self._bars[name] = self._progress.add_task(name, total=1, **fields)
        self._progress.update(bar, completed=ended, total=progress["total"] or 1)
        self._progress.update(bar, **fields)

"""Live progress bars, one per task (rich), while a simulation runs on a terminal.

Every line fits 80 columns at the largest fleets the simulator runs (20,000 subtasks, the
longest status ``PartialSuccess``): long task names are shortened with an ellipsis rather than
letting rich cut the counts ("300/3...").
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

WIDTH = 80
NAME_WIDTH = 14
BAR_WIDTH = 10
# name 14, bar 10, "20000/20000" 11, status 14, "ok 20000 fail 20000" 19, "0:00:00" 7, and
# one space between the six columns: 80.


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """The name, cut to ``width`` characters with an ellipsis when longer."""
    return name if len(name) <= width else name[: width - 1] + "\u2026"


class LiveBars:
    """One bar per task: subtasks ended out of total, with the task's status."""

    def __init__(self, *, enabled: bool | None = None, console: Console | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bars: dict[str, Any] = {}
        self._progress = Progress(
            TextColumn(f"{{task.description:<{NAME_WIDTH}}}"),
            BarColumn(bar_width=BAR_WIDTH),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]:<14} ok {task.fields[ok]} fail {task.fields[fail]}"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
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
            bar = self._bars[name] = self._progress.add_task(short_name(name), total=1, **fields)
        self._progress.update(bar, completed=ended, total=progress["total"] or 1)
        self._progress.update(bar, **fields)

    def render(self) -> str:
        """The bars as they would be drawn now (for tests and logs)."""
        console = self._progress.console
        with console.capture() as capture:
            console.print(self._progress.get_renderable())
        return capture.get()

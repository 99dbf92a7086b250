"""How one run is carried out: the command line's choices on top of the scenario."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Command-line choices that override or complete the scenario."""

    workdir: Path
    broker: str | None = None
    shard: tuple[int, int] | None = None
    progress: bool | None = None
    report_dir: Path | None = None
    # The console: told the emulator's URL once it listens, and awaited with the report once
    # the fleet has stopped; the emulator and the broker stay up until it returns.
    announce: Callable[[str], None] | None = None
    hold: Callable[[dict[str, Any]], Awaitable[None]] | None = None

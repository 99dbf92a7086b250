"""What the API modules see of an emulator: a small protocol, so they never import the service.

The service (:mod:`agent.sim.emulator.service`) satisfies it; :mod:`agent.sim.emulator.server`
builds the service and then the HTTP application whose handlers reach it through this type.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agent.sim.emulator.dispatchers import DispatcherTable
from agent.sim.emulator.engine import TaskEngine
from agent.sim.emulator.link import PlatformLink
from agent.sim.emulator.ota_downloads import PackageDownloads
from agent.sim.emulator.presence import Presence
from agent.sim.emulator.progress_series import ProgressSeries
from agent.sim.emulator.registry import Registry
from agent.sim.emulator.settings import EmulatorSettings
from agent.sim.emulator.wire_log import WireLog

# Bodies larger than this are refused (30,000 targets of 128 characters fit).
MAX_BODY = 8 * 1024 * 1024


class EmulatorContext(Protocol):
    """The parts of a running emulator that request handlers use."""

    settings: EmulatorSettings
    clock: Callable[[], float]
    log: Any
    registry: Registry
    engine: TaskEngine
    table: DispatcherTable
    link: PlatformLink | None
    downloads: PackageDownloads
    presence: Presence
    wire: WireLog
    series: ProgressSeries
    url: str
    state: dict[str, Any]
    on_close: list[Callable[[], Awaitable[None]]]

    def new_id(self) -> str:
        """A fresh task id."""
        ...

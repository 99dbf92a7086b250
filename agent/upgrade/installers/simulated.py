"""The simulated installer: no device is touched; it takes a while and sometimes fails.

Used by the fleet simulator (many agents in one process) and by rehearsals; the duration is
spent in small steps so progress reports flow as they would from a real install.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from agent.config.upgrades import SimulatedInstaller
from agent.core.errors import UpgradeFailed
from agent.core.model import UpgradeStatus
from agent.upgrade.installers.base import InstallJob, ProgressFn

# One generator for every instance (simulated failures and jitter, not secrets): seeding one
# per instance from the OS costs a fleet of thousands of agents seconds.
SHARED_RNG = random.Random()  # noqa: S311

_STEPS = 10


class SimulatedInstallerImpl:
    """An :class:`~agent.upgrade.installers.base.Installer` that only pretends."""

    def __init__(self, settings: SimulatedInstaller, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or SHARED_RNG

    async def install(self, job: InstallJob, detail: dict[str, Any], progress: ProgressFn) -> None:
        """Wait ``duration_s`` in steps, then fail at ``failure_rate``."""
        for step in range(1, _STEPS + 1):
            if self.settings.duration_s:
                await asyncio.sleep(self.settings.duration_s / _STEPS)
            await progress(step * 100 // _STEPS)
        if self.settings.failure_rate and self._rng.random() < self.settings.failure_rate:
            raise UpgradeFailed(UpgradeStatus.INSTALL_FAILED, "simulated install failure")

    async def activate(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """Active at once, no reboot."""
        return False

    async def reboot(self, job: InstallJob, detail: dict[str, Any]) -> None:
        """Never needed."""

    def rebooted(self, detail: dict[str, Any]) -> bool:
        """Never needed."""
        return True

    async def confirm(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """Always healthy."""
        return True

    async def rollback(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """Nothing to undo."""
        return False

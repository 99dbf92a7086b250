"""What the upgrade side does after every (re)connect, and the child list's changes.

After a connect (with upgrades enabled): report the versions this device (and, in gateway
mode, each child) runs,
ask the platform for the child-list changes since the version last seen, re-arm the deadlines
of open gateway tasks, and clear week-old package leftovers.
"""

from __future__ import annotations

import time
from typing import Any

from agent.core.errors import LocalProtocolError
from agent.core.model import ChildrenChanged, ChildrenSyncRequest, Outbound, Subtask
from agent.gateway.registry import ChildRegistry
from agent.gateway.tasks import TaskGroups
from agent.pipeline.executor import Context, Outcome
from agent.pipeline.uplink import Uplink
from agent.upgrade.executor import UpgradeExecutor
from agent.upgrade.packages import PackageCache
from agent.upgrade.versions import VersionStore


class ConnectHook:
    """Connect-time reports, and the executor for ``children_changed`` subtasks."""

    def __init__(
        self,
        *,
        upgrades: UpgradeExecutor,
        registry: ChildRegistry | None,
        tasks: TaskGroups | None,
        packages: PackageCache,
        versions: VersionStore,
        report_children: bool,
        report_versions: bool,
        log: Any,
        clock: Any = time.time,
    ) -> None:
        self._upgrades = upgrades
        self._registry = registry
        self._tasks = tasks
        self._packages = packages
        self._versions = versions
        self._report_children = report_children
        self._report_versions = report_versions
        self._log = log
        self._clock = clock

    async def connected(self, uplink: Uplink) -> None:
        """Versions, child sync request, task deadlines (transient sends: repeated next time)."""
        events: list[Outbound] = []
        if self._report_versions:
            events.append(await self._upgrades.version_report(uplink.agent_id))
        if self._registry is not None:
            await self._registry.load()
            if self._report_versions and self._report_children:
                for child in self._registry.children():
                    events.append(await self._upgrades.version_report(child.device_id))
            events.append(
                ChildrenSyncRequest(device_id=uplink.agent_id, version=self._registry.version)
            )
        try:
            if events:
                uplink.send_transient(events)
        except LocalProtocolError as exc:
            # A dialect without version reports (OceanConnect): nothing to tell the platform.
            self._log.info("upgrade.versions.not_reported", reason=str(exc))
        if self._tasks is not None:
            await self._tasks.rearm(uplink.send)
        removed = self._packages.sweep(self._clock())
        if removed:
            self._log.info("upgrade.packages.swept", files=removed)

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        """Add and remove children as the platform says."""
        assert isinstance(subtask, ChildrenChanged)  # noqa: S101 - routed by kind
        if self._registry is None:
            ctx.log.warning("gateway.children.ignored", reason="gateway mode is off")
            return Outcome(ok=False, summary={"error": "not_a_gateway"})
        added, removed = await self._registry.apply(subtask)
        for info in subtask.added:
            self._versions.set_default(info.device_id, info.fw_version, info.sw_version)
        ctx.log.info(
            "gateway.children.changed", added=added, removed=removed, version=subtask.version
        )
        return Outcome(ok=True, summary={"added": added, "removed": removed})

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        """Applying the same change again gives the same registry."""
        return await self.execute(subtask, ctx)

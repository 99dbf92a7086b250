"""What the upgrade side does after every (re)connect, and the child list's changes.

After a connect: in gateway mode, report which children are online (see
:mod:`agent.gateway.presence`); with upgrades enabled, report the versions this device (and,
in gateway mode, each child) runs; ask the platform for the child-list changes since the
version last seen, re-arm the deadlines of open gateway tasks, and clear week-old package
leftovers. Children added or removed are ONLINE (or forgotten) as soon as the change is applied.
"""

from __future__ import annotations

import time
from typing import Any

from agent.core.errors import LocalProtocolError
from agent.core.model import ChildrenChanged, ChildrenSyncRequest, Outbound, Subtask
from agent.gateway.presence import ChildPresence
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
        presence: ChildPresence | None = None,
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
        self._presence = presence
        self._packages = packages
        self._versions = versions
        self._report_children = report_children
        self._report_versions = report_versions
        self._log = log
        self._clock = clock

    async def connected(self, uplink: Uplink) -> None:
        """Children's status, versions, child sync request, task deadlines.

        The children go ONLINE first: the platform takes reports and sends work only for online
        devices. The rest are transient sends, repeated after the next connect.
        """
        if self._presence is not None:
            await self._presence.connected(uplink)
        events: list[Outbound] = []
        if self._report_versions:
            events.append(await self._upgrades.version_report(uplink.agent_id))
        if self._registry is not None:
            await self._registry.load()
            if self._report_versions and self._report_children:
                for child in self._registry.children():
                    report = await self._upgrades.version_report(child.device_id)
                    if report.fw_version is None and report.sw_version is None:
                        # Never an empty report: it would claim the child runs nothing.
                        self._log.warning("upgrade.versions.unknown", child=child.device_id)
                        continue
                    events.append(report)
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
        change = subtask
        if self._presence is not None:
            # Children added at this gateway's request keep the type of the adapter that found them.
            typed = [i.model_copy(update={"type": self._presence.type_of(i)}) for i in change.added]
            change = change.model_copy(update={"added": typed})
        added, removed = await self._registry.apply(change)
        for info in change.added:
            # Fills gaps only: a notification's null versions never wipe configured ones.
            self._versions.learn(info.device_id, info.fw_version, info.sw_version)
        ctx.log.info(
            "gateway.children.changed", added=added, removed=removed, version=change.version
        )
        replies: list[Outbound] = []
        if self._presence is not None:
            if change.refused:
                self._presence.refused(change.refused)
            self._presence.removed(change.removed)
            status = self._presence.added(change.added)
            if status is not None:
                replies.append(status)
        summary: dict[str, Any] = {"added": added, "removed": removed}
        if change.refused:
            summary["refused"] = sorted(change.refused)
        return Outcome(ok=True, summary=summary, replies=replies)

    def stop_background(self) -> None:
        """The agent is stopping: no more presence rounds."""
        if self._presence is not None:
            self._presence.stop()

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        """Applying the same change again gives the same registry."""
        return await self.execute(subtask, ctx)

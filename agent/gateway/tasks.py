"""Gateway upgrade tasks: the children one batch task (``task_id``) covers, and its deadline.

In gateway mode each child's events carry the task's ``task_id`` and ``sub_device_count``.
The gateway notes which children it heard about (a version query or an upgrade event) and,
when the task's deadline passes with fewer than ``sub_device_count`` of them, reports the
children it never heard about as failed, so the platform's subtasks for them end instead of
hanging. A child is attributed only when that is unambiguous: the registry's children of the
task's types that were not heard about must number exactly the missing count; otherwise the
gap is logged and nothing is guessed. Groups are kept in the journal, so a restart re-arms
their deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent.core.model import Outbound, UpgradeProgress, UpgradeStatus
from agent.gateway.registry import ChildRegistry
from agent.journal.base import Journal

_KEY = "gateway/tasks"
# Finished groups are remembered this long after their deadline (late events still match).
_KEEP_S = 86400.0

Send = Callable[[list[Outbound]], Awaitable[None]]
VersionOf = Callable[[str, str], Awaitable[str]]
Released = Callable[[str, str], Awaitable[None]]


class TaskGroups:
    """Open gateway tasks of one gateway."""

    def __init__(
        self,
        journal: Journal,
        agent_id: str,
        registry: ChildRegistry,
        *,
        deadline_s: float,
        version_of: VersionOf,
        on_closed: Released,
        log: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._journal = journal
        self._agent_id = agent_id
        self._registry = registry
        self._deadline_s = deadline_s
        self._version_of = version_of
        self._on_closed = on_closed
        self._log = log
        self._clock = clock
        self._groups: dict[str, dict[str, Any]] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._send: Send | None = None
        self._lock = asyncio.Lock()

    async def _load(self) -> dict[str, dict[str, Any]]:
        if self._groups is None:
            stored = await self._journal.get_value(self._agent_id, _KEY)
            self._groups = json.loads(stored) if stored else {}
        return self._groups

    async def _save(self) -> None:
        groups = await self._load()
        now = self._clock()
        for task_id in [
            t for t, g in groups.items() if g["closed"] and now > g["deadline"] + _KEEP_S
        ]:
            del groups[task_id]
        await self._journal.set_value(self._agent_id, _KEY, json.dumps(groups))

    def holds(self, package_id: str) -> bool:
        """Whether an open task still expects children that need this package."""
        return any(
            package_id in g["packages"] and not g["closed"] for g in (self._groups or {}).values()
        )

    def group(self, task_id: str) -> dict[str, Any] | None:
        """A task's record (for tests and status)."""
        return (self._groups or {}).get(task_id)

    async def note(
        self,
        task_id: str,
        child_id: str,
        expected: int | None,
        *,
        package_id: str | None = None,
        target: str | None = None,
        send: Send,
    ) -> None:
        """A child event for ``task_id`` arrived (starts the task's deadline on the first)."""
        self._send = send
        async with self._lock:
            groups = await self._load()
            group = groups.get(task_id)
            if group is None:
                now = self._clock()
                group = groups[task_id] = {
                    "expected": expected,
                    "deadline": now + self._deadline_s,
                    "received": [],
                    "finished": [],
                    "types": [],
                    "packages": [],
                    "target": target or "firmware",
                    "closed": False,
                }
            changed = False
            if expected is not None and group["expected"] != expected:
                group["expected"] = max(expected, group["expected"] or 0)
                changed = True
            if child_id not in group["received"]:
                group["received"].append(child_id)
                changed = True
            child = self._registry.get(child_id)
            if child is not None and child.type not in group["types"]:
                group["types"].append(child.type)
                changed = True
            if package_id is not None and package_id not in group["packages"]:
                group["packages"].append(package_id)
                changed = True
            if target is not None:
                group["target"] = target
            if changed:
                await self._save()
        self._arm(task_id)

    async def finished(self, task_id: str, child_id: str) -> None:
        """A child of the task reached its final result."""
        async with self._lock:
            groups = await self._load()
            group = groups.get(task_id)
            if group is None or child_id in group["finished"]:
                return
            group["finished"].append(child_id)
            complete = group["expected"] is not None and len(group["finished"]) >= group["expected"]
            if complete and not group["closed"]:
                group["closed"] = True
            await self._save()
        if complete:
            self._cancel(task_id)
            for package_id in group["packages"]:
                await self._on_closed(package_id, f"task:{task_id}")

    async def rearm(self, send: Send) -> None:
        """After a (re)start: arm the deadline of every open task."""
        self._send = send
        for task_id, group in (await self._load()).items():
            if not group["closed"]:
                self._arm(task_id)

    def _arm(self, task_id: str) -> None:
        if task_id in self._timers or self._groups is None:
            return
        group = self._groups.get(task_id)
        if group is None or group["closed"]:
            return
        delay = max(0.0, group["deadline"] - self._clock())
        loop = asyncio.get_running_loop()
        self._timers[task_id] = loop.call_later(
            delay, lambda: loop.create_task(self._expire(task_id), name=f"task-deadline {task_id}")
        )

    def _cancel(self, task_id: str) -> None:
        timer = self._timers.pop(task_id, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        """Cancel every timer (the agent is stopping)."""
        for task_id in list(self._timers):
            self._cancel(task_id)

    async def _expire(self, task_id: str) -> None:
        self._timers.pop(task_id, None)
        async with self._lock:
            groups = await self._load()
            group = groups.get(task_id)
            if group is None or group["closed"]:
                return
            reports = await self._missing_reports(task_id, group)
            if reports and self._send is not None:
                await self._send(reports)
            group["closed"] = True
            group["reported_missing"] = [r.device_id for r in reports]
            await self._save()
        for package_id in group["packages"]:
            with contextlib.suppress(Exception):
                await self._on_closed(package_id, f"task:{task_id}")

    async def _missing_reports(self, task_id: str, group: dict[str, Any]) -> list[Outbound]:
        expected = group["expected"]
        received = set(group["received"])
        missing = (expected or 0) - len(received)
        if missing <= 0:
            return []
        await self._registry.load()
        types = set(group["types"])
        candidates = [
            c.device_id
            for c in self._registry.children()
            if c.device_id not in received and (not types or c.type in types)
        ]
        if len(candidates) != missing:
            self._log.warning(
                "upgrade.task.children_missing",
                task_id=task_id,
                expected=expected,
                received=len(received),
                candidates=len(candidates),
                reported=0,
            )
            return []
        self._log.warning(
            "upgrade.task.children_missing",
            task_id=task_id,
            expected=expected,
            received=len(received),
            children=candidates,
            reported=len(candidates),
        )
        reports: list[Outbound] = []
        for child_id in candidates:
            version = await self._version_of(child_id, group["target"])
            reports.append(
                UpgradeProgress(
                    device_id=child_id,
                    phase="failed",
                    status=UpgradeStatus.NO_EVENT,
                    version=version,
                    description=f"no upgrade event for task {task_id} arrived by its deadline",
                )
            )
        return reports

"""Desired state: apply it section by section, report what was applied, catch up on connect.

Cloud-neutral: the profiles turn a Huawei property set or shadow read and a Tencent delta or
shadow read into :class:`~agent.core.model.DesiredState`; this executor routes each section to its
applier (a handler, or the JSON state file), and answers with one
:class:`~agent.core.model.DesiredStateResult`. Rules:

- A section is applied only as far as its applier says; the result is "applied" only when
  every section was applied completely, "partial" when some of it was, never "applied" then.
- The same document version twice is a no-op: the journal recognises the subtask key (the
  version and content, or the platform's request id), and within a connection versions at or
  below the last one handled are not applied again (a late shadow read after a newer delta).
- What was applied is recorded per device in the journal's key/value store. Only sections
  whose applied value the platform does not hold yet are reported; a repeated push of a
  desired value that cannot be applied therefore ends without another report, so platforms
  that push again after every report (Huawei) do not loop.
- After every (re)connect the platform's document is read (deltas are not stored while the
  device is offline); a refused report (version conflict) gets one more read, not a loop.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import CommandSettings, DesiredStateSettings, ExecHandler
from agent.core.merge_patch import covers, merge
from agent.core.model import (
    DesiredState,
    DesiredStateQuery,
    DesiredStateRefresh,
    DesiredStateResult,
    StateQuery,
    StateReport,
    Subtask,
)
from agent.executors.appliers import (
    HandlerApplier,
    SectionOutcome,
    SimulatedApplier,
    StateFileApplier,
)
from agent.journal.base import Journal
from agent.pipeline.executor import Context, Outcome
from agent.pipeline.uplink import Uplink
from agent.profiles.base import json_depth

# One generator for every instance (simulated failures and jitter, not secrets): seeding one
# per instance from the OS costs a fleet of thousands of agents seconds.
SHARED_RNG = random.Random()  # noqa: S311

# A refused report gets this many fresh reads before the agent waits for the next change.
MAX_REGETS = 1
_MISSING = object()


@dataclass
class _Record:
    """What the agent last applied for one device (kept in the journal's key/value store)."""

    version: int | None = None
    applied: dict[str, Any] = field(default_factory=dict)


class DesiredStateExecutor:
    """Executes desired-state subtasks, refreshes and state queries for one connection."""

    def __init__(
        self,
        settings: DesiredStateSettings,
        commands: CommandSettings,
        journal: Journal,
        *,
        agent_id: str,
        rng: random.Random | None = None,
    ) -> None:
        self.agent_id = agent_id
        self._journal = journal
        self._lock = asyncio.Lock()
        self._regets = 0
        # The newest document version handled per device since the last connect. Kept in
        # memory on purpose: the read after a connect is the platform's current word, even
        # if its version is lower than one seen before (a shadow that was reset).
        self._versions: dict[str, int] = {}
        self._rng = rng or SHARED_RNG
        self.reconfigure(settings, commands)

    def reconfigure(self, settings: DesiredStateSettings, commands: CommandSettings) -> None:
        """Take new appliers and bounds (a reload); the versions seen since connect stay."""
        self.settings = settings
        handlers: dict[str, HandlerApplier | SimulatedApplier] = {}
        for applier in settings.appliers:
            handler = applier.handler
            handlers[applier.section] = (
                HandlerApplier(handler, commands, settings.default_timeout_s)
                if isinstance(handler, ExecHandler)
                else SimulatedApplier(handler, self._rng)
            )
        self._handlers = handlers
        self._state_file = (
            StateFileApplier(settings.state_file) if settings.state_file is not None else None
        )
        self._state_sections = set(settings.state_file_sections)

    @property
    def state_file(self) -> Path | None:
        """Where the built-in applier keeps the state, if configured."""
        return self._state_file.path if self._state_file is not None else None

    # -- executor contract ----------------------------------------------------------------

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        """Apply, refresh or answer, by kind."""
        if isinstance(subtask, DesiredState):
            return await self._apply(subtask, ctx, force=False)
        if isinstance(subtask, DesiredStateRefresh):
            return self._refresh(subtask, ctx)
        assert isinstance(subtask, StateQuery)  # noqa: S101 - the dispatcher routes by kind
        return await self._query(subtask)

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        """Desired state is declarative: applying it again converges to the same state."""
        if isinstance(subtask, DesiredState):
            return await self._apply(subtask, ctx, force=True)
        if isinstance(subtask, DesiredStateRefresh):
            # The read after the next connect catches up anyway.
            return Outcome(ok=False, summary={"error": "interrupted"})
        return await self.execute(subtask, ctx)

    async def connected(self, uplink: Uplink) -> None:
        """Read the platform's document: desired changes made while offline were not pushed."""
        self._regets = 0
        self._versions.clear()
        uplink.send_transient([self._query_event()])

    # -- desired state --------------------------------------------------------------------

    async def _apply(self, subtask: DesiredState, ctx: Context, *, force: bool) -> Outcome:
        async with self._lock:
            record = await self._load(subtask.device_id)
            version = subtask.version
            handled = self._versions.get(subtask.device_id)
            if not force and version is not None and handled is not None and version <= handled:
                # A late read overtaken by a newer delta: applying it would go backwards.
                ctx.log.info("desired.stale", version=version, handled_version=handled)
                return Outcome(
                    ok=True, summary={"status": "unchanged", "version": version, "stale": True}
                )
            if subtask.source == "push":
                self._regets = 0  # a new change: a conflict may be retried again
            outcomes = await self._run(subtask, ctx)
            # What the platform holds: its own word (a read, a delta), else what was last
            # applied. Not on a recovery: the interrupted run recorded what it applied before
            # its report left, so the record may claim values the platform never received
            # (reported nothing, cleared desired: the shadow would never hold them).
            if subtask.reported is not None:
                baseline = dict(subtask.reported)
            else:
                baseline = {} if force else dict(record.applied)
            for section, outcome in outcomes.items():
                if not outcome.applied:
                    continue
                if outcome.value is None:
                    record.applied.pop(section, None)  # a section set to null is removed
                else:
                    record.applied[section] = _merged(record.applied.get(section), outcome.value)
            if version is not None:
                record.version = version
                self._versions[subtask.device_id] = max(version, handled or version)
            await self._save(subtask.device_id, record)
        result = self._result(subtask, outcomes, baseline)
        summary: dict[str, Any] = {"status": result.status, "version": version}
        summary["applied"] = sorted(s for s, o in outcomes.items() if o.applied)
        if result.failed:
            summary["failed"] = result.failed
        return Outcome(ok=result.ok, summary=summary, replies=[result])

    async def _run(self, subtask: DesiredState, ctx: Context) -> dict[str, SectionOutcome]:
        """Validate every section, then apply: handlers concurrently, the state file at once."""
        outcomes: dict[str, SectionOutcome] = {}
        to_file: dict[str, Any] = {}
        jobs: dict[str, asyncio.Task[SectionOutcome]] = {}
        async with asyncio.TaskGroup() as group:
            for section, desired in subtask.sections.items():
                problem = self._problem(section, desired)
                if problem is not None:
                    outcomes[section] = SectionOutcome.failed(problem)
                elif section in self._handlers:
                    applier = self._handlers[section]
                    jobs[section] = group.create_task(
                        applier.apply(subtask.device_id, section, desired, subtask.version, ctx.log)
                    )
                else:
                    to_file[section] = desired
            if to_file:
                assert self._state_file is not None  # noqa: S101 - _problem checked it
                outcomes.update(
                    await self._state_file.apply(subtask.device_id, to_file, subtask.version)
                )
        outcomes.update({section: job.result() for section, job in jobs.items()})
        return {section: outcomes[section] for section in subtask.sections}

    def _problem(self, section: str, desired: Any) -> str | None:
        # Counted as the platforms count a document: the section itself is the first level.
        depth = json_depth(desired) + 1
        if depth > self.settings.max_depth:
            limit = self.settings.max_depth
            return f"nested {depth} levels deep (the section counts as one); at most {limit}"
        if section in self._handlers:
            return None
        if self._state_file is not None and (
            not self._state_sections or section in self._state_sections
        ):
            return None
        return f"no applier is configured for section {section!r}"

    def _result(
        self,
        subtask: DesiredState,
        outcomes: dict[str, SectionOutcome],
        baseline: dict[str, Any],
    ) -> DesiredStateResult:
        applied = {s: o.value for s, o in outcomes.items() if o.applied}
        complete = [s for s, o in outcomes.items() if o.complete]
        failed = {s: o.error or "not applied" for s, o in outcomes.items() if not o.complete}
        if not failed:
            status = "applied"
        elif applied:
            status = "partial"
        else:
            status = "failed"
        reported = {
            section: value
            for section, value in applied.items()
            if not covers(baseline.get(section, _MISSING), value)
        }
        return DesiredStateResult(
            device_id=subtask.device_id,
            report_id=f"agent-{uuid.uuid4().hex[:16]}",
            correlation=subtask.correlation,
            version=subtask.version,
            status=status,
            description=_describe(status, complete, applied, failed),
            reported=reported,
            cleared=complete,
            failed=failed,
        )

    # -- refresh and query ----------------------------------------------------------------

    def _refresh(self, subtask: DesiredStateRefresh, ctx: Context) -> Outcome:
        if self._regets >= MAX_REGETS:
            ctx.log.warning(
                "desired.conflict.unresolved",
                reason=subtask.reason,
                detail="waiting for the next change or reconnect instead of reading again",
            )
            return Outcome(ok=False, summary={"error": "conflict persists", "regets": 0})
        self._regets += 1
        ctx.uplink.send_transient([self._query_event(subtask.device_id)])
        return Outcome(ok=True, summary={"regets": 1, "reason": subtask.reason})

    async def _query(self, subtask: StateQuery) -> Outcome:
        record = await self._load(subtask.device_id)
        sections = record.applied
        if subtask.section is not None:
            sections = {k: v for k, v in sections.items() if k == subtask.section}
        answer = StateReport(
            device_id=subtask.device_id, correlation=subtask.correlation, sections=sections
        )
        return Outcome(ok=True, summary={"sections": sorted(sections)}, replies=[answer])

    def _query_event(self, device_id: str | None = None) -> DesiredStateQuery:
        return DesiredStateQuery(
            device_id=device_id or self.agent_id, correlation=f"agent-{uuid.uuid4().hex[:16]}"
        )

    # -- record ---------------------------------------------------------------------------

    async def _load(self, device_id: str) -> _Record:
        stored = await self._journal.get_value(self.agent_id, _record_name(device_id))
        if stored is None:
            return _Record()
        data = json.loads(stored)
        return _Record(version=data.get("version"), applied=data.get("applied", {}))

    async def _save(self, device_id: str, record: _Record) -> None:
        value = json.dumps({"version": record.version, "applied": record.applied})
        await self._journal.set_value(self.agent_id, _record_name(device_id), value)


def _record_name(device_id: str) -> str:
    return f"desired_state:{device_id}"


def _merged(current: Any, value: Any) -> Any:
    if isinstance(current, dict) and isinstance(value, dict):
        return merge(current, value)
    return value


def _describe(
    status: str, complete: list[str], applied: dict[str, Any], failed: dict[str, str]
) -> str:
    parts = []
    if complete:
        parts.append("applied " + ", ".join(complete))
    partly = [f"{s} ({reason})" for s, reason in failed.items() if s in applied]
    if partly:
        parts.append("applied in part " + "; ".join(partly))
    missed = [f"{s} ({reason})" for s, reason in failed.items() if s not in applied]
    if missed:
        parts.append("not applied " + "; ".join(missed))
    text = "; ".join(parts) or "nothing to apply"
    return text if status == "applied" else f"{status}: {text}"

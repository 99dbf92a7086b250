"""The upgrade executor: the state machine for a device or a child, one journaled step at a time.

Each state has a step (a method below) that does that state's side effect and names the event
it ended with; the transition to the next state is journaled (``record_state``) before that
state's step runs, and a failpoint ``upgrade.<state>`` sits right after the write. After a
restart :meth:`UpgradeExecutor.recover` resumes from the journaled state with the journaled
detail, so a download resumes, a half-written slot is written again, and a pending reboot is
recognised; no phase earlier than one already reported is ever reported again.

Version queries are answered from the version store; an upgrade offer that could not be
decoded is answered with a failure naming what was wrong.

"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent.config.upgrades import UpgradeSettings
from agent.core.errors import IllegalTransition, LocalProtocolError, UpgradeFailed
from agent.core.model import (
    InvalidUpgrade,
    Outbound,
    Subtask,
    UpgradeProgress,
    UpgradeRequest,
    UpgradeStatus,
    VersionQuery,
    VersionReport,
)
from agent.gateway.adapters import ChildAdapter
from agent.gateway.registry import ChildRegistry
from agent.gateway.tasks import TaskGroups
from agent.journal.base import Journal
from agent.pipeline.executor import Context, Outcome
from agent.runtime import failpoints
from agent.runtime.logging import redactor
from agent.upgrade import machine
from agent.upgrade.child_steps import CHILD_STEPS
from agent.upgrade.installers.base import Installer
from agent.upgrade.installers.self_update import SelfUpdater
from agent.upgrade.packages import PackageCache
from agent.upgrade.progress import ProgressReporter, RateLimiter
from agent.upgrade.steps import DEVICE_STEPS, UNKNOWN_VERSION, Parts, Run, rolled_back_report
from agent.upgrade.versions import VersionStore

# Dispatcher states that mean "started, nothing of ours journaled yet".
_NOT_STARTED = frozenset({"running", "accepted"})
# Download failures that leave a part file worth resuming by a later attempt.
_RESUMABLE = frozenset({UpgradeStatus.DOWNLOAD_FAILED, UpgradeStatus.LINK_EXPIRED})
# The phases reported by default: those after the package is completely downloaded and
# verified (the safe reading of the IoTDA FAQ on OTA upgrades quoted in docs/upgrades.md).
_AFTER_DOWNLOAD = frozenset(
    machine.STATES - {machine.RECEIVED, machine.CHECKING, machine.DOWNLOADING, machine.VERIFYING}
)


class UpgradeExecutor:
    """Executes ``upgrade``, ``invalid_upgrade`` and ``version_query`` subtasks."""

    # Stopping leaves an upgrade open at its journaled state; the next start resumes it.
    resumable = True

    def __init__(
        self,
        *,
        agent_id: str,
        settings: UpgradeSettings,
        journal: Journal,
        installer: Installer,
        packages: PackageCache,
        versions: VersionStore,
        keys: list[Any],
        registry: ChildRegistry | None = None,
        adapters: dict[str, ChildAdapter] | None = None,
        tasks: TaskGroups | None = None,
        early_progress: bool = False,
        log: Any,
        clock: Any = time.time,
        self_update: SelfUpdater | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.settings = settings
        self._journal = journal
        self._installer = installer
        self._packages = packages
        self.versions = versions
        self._keys = keys
        self._registry = registry
        self._adapters = adapters or {}
        self._tasks = tasks
        # Without early progress the first report follows the verified download (docs/upgrades.md).
        self._report_phases = None if early_progress else _AFTER_DOWNLOAD
        self._log = log
        self._clock = clock
        self._limiter = RateLimiter(settings.report_interval_s)
        self._active: dict[str, tuple[str, asyncio.Future[None]]] = {}
        self._parts = Parts(
            agent_id=agent_id,
            settings=settings,
            journal=journal,
            installer=installer,
            packages=packages,
            versions=versions,
            keys=keys,
            registry=registry,
            adapters=self._adapters,
            tasks=tasks,
            clock=clock,
            child_slots=asyncio.Semaphore(settings.install_concurrency),
            self_update=self_update,
        )

    def on_ready(self) -> None:
        """The daemon has sent READY=1: a restarted agent may now confirm its own update."""
        if self._parts.self_update is not None:
            self._parts.self_update.ready.set()

    # -- the executor contract --------------------------------------------------------------

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        """Answer a version query, refuse an invalid offer, or run an upgrade from the start."""
        if self._registry is not None:
            await self._registry.load()  # children the platform added before a restart
        if isinstance(subtask, VersionQuery):
            return await self._version_query(subtask, ctx)
        if isinstance(subtask, InvalidUpgrade):
            return await self._invalid(subtask, ctx)
        assert isinstance(subtask, UpgradeRequest)  # noqa: S101 - routed by kind
        return await self._upgrade(subtask, ctx, machine.RECEIVED, {})

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        """Resume an upgrade from its journaled state (queries are simply answered again)."""
        if not isinstance(subtask, UpgradeRequest):
            return await self.execute(subtask, ctx)
        if self._registry is not None:
            await self._registry.load()
        detail: dict[str, Any] = {}
        for row in await self._journal.open_subtasks(ctx.agent_id):
            if row.key == subtask.key:
                detail = dict(row.detail)
        if state in _NOT_STARTED or state not in machine.STATES:
            state = machine.RECEIVED
        ctx.log.info("upgrade.resuming", state=state, version=subtask.version)
        return await self._upgrade(subtask, ctx, state, detail)

    # -- queries and refusals ---------------------------------------------------------------

    async def _version_query(self, query: VersionQuery, ctx: Context) -> Outcome:
        if query.device_id != self.agent_id and not self._known_child(query.device_id):
            ctx.log.warning("upgrade.version_query.unknown_child", child=query.device_id)
            return Outcome(ok=False, summary={"error": "unknown_child"})
        if query.task_id and self._tasks is not None and query.device_id != self.agent_id:
            await self._tasks.note(
                query.task_id, query.device_id, query.sub_device_count, send=ctx.uplink.send
            )
        report = await self.version_report(query.device_id)
        if report.fw_version is None and report.sw_version is None:
            # An empty report would tell the platform nothing true (iot_06_v5_3029 makes both
            # versions optional, so the platform itself would not refuse one).
            ctx.log.warning("upgrade.version_query.versions_unknown", device=query.device_id)
            return Outcome(ok=False, summary={"error": "versions_unknown"})
        return Outcome(
            ok=True,
            summary={"fw_version": report.fw_version, "sw_version": report.sw_version},
            replies=[report],
        )

    async def version_report(self, device_id: str) -> VersionReport:
        """What a device (or child) runs, as a report."""
        versions = await self._versions_of(device_id)
        return VersionReport(
            device_id=device_id, fw_version=versions["firmware"], sw_version=versions["software"]
        )

    async def _versions_of(self, device_id: str) -> dict[str, str | None]:
        return await self._parts.versions_of(device_id)

    async def _invalid(self, offer: InvalidUpgrade, ctx: Context) -> Outcome:
        version = await self.running_version(offer.device_id, offer.target)
        ctx.log.warning("upgrade.refused", reason=offer.reason, child=offer.device_id)
        report = UpgradeProgress(
            device_id=offer.device_id,
            phase="failed",
            status=UpgradeStatus.UNSUPPORTED,
            version=version,
            description=f"upgrade refused: {offer.reason}"[:256],
        )
        return Outcome(
            ok=False,
            summary={"status": UpgradeStatus.UNSUPPORTED, "error": offer.reason},
            replies=[report],
        )

    def _known_child(self, device_id: str) -> bool:
        return self._registry is not None and self._registry.get(device_id) is not None

    async def _current(self, device_id: str, target: str) -> str:
        return await self._parts.current(device_id, target)

    async def running_version(self, device_id: str, target: str) -> str:
        """The running version for a report, which the platform requires to be non-empty."""
        current = await self._current(device_id, target)
        if current:
            return current
        self._log.warning("upgrade.version.unknown", device=device_id, target=target)
        return UNKNOWN_VERSION

    # -- the machine ------------------------------------------------------------------------

    async def _upgrade(
        self, request: UpgradeRequest, ctx: Context, state: str, detail: dict[str, Any]
    ) -> Outcome:
        if request.access_token:
            redactor.register(request.access_token)
        child = request.device_id != self.agent_id
        if child and not self._known_child(request.device_id):
            ctx.log.warning("upgrade.unknown_child", child=request.device_id)
            report = UpgradeProgress(
                device_id=request.device_id,
                phase="failed",
                status=UpgradeStatus.UNSUPPORTED,
                version=UNKNOWN_VERSION,
                description="this gateway has no such child device",
            )
            return Outcome(ok=False, summary={"error": "unknown_child"}, replies=[report])
        await self._wait_for_other(request, ctx)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._active[request.device_id] = (request.key, done)
        try:
            return await self._drive(request, ctx, state, detail, child)
        finally:
            self._active.pop(request.device_id, None)
            done.set_result(None)

    async def _wait_for_other(self, request: UpgradeRequest, ctx: Context) -> None:
        """Another upgrade of the same device runs: wait for it (then this one checks anew)."""
        while (active := self._active.get(request.device_id)) is not None:
            ctx.log.info("upgrade.waiting_for_other", other=active[0])
            await asyncio.shield(active[1])

    async def _drive(
        self, request: UpgradeRequest, ctx: Context, state: str, detail: dict[str, Any], child: bool
    ) -> Outcome:
        current = await self._current(request.device_id, request.target)
        detail.setdefault("previous_version", current)

        async def persist() -> None:
            await self._journal.record_state(request.key, run.machine.state, detail, self._clock())

        async def send(report: UpgradeProgress) -> None:
            # Progress goes out as it happens and is not replayed: a journaled report resent
            # after a restart could arrive after a later one and make the status flip back.
            # The final result is journaled with the subtask's end and always arrives.
            try:
                ctx.uplink.send_transient([report])
            except LocalProtocolError as exc:
                ctx.log.info("upgrade.progress.not_reported", reason=str(exc))

        reporter = ProgressReporter(
            device_id=request.device_id,
            version=request.version,
            current_version=detail["previous_version"] or UNKNOWN_VERSION,
            detail=detail,
            step=self.settings.progress_step,
            limiter=self._limiter,
            send=send,
            persist=persist,
            enabled_phases=self._report_phases,
        )
        run = Run(request, ctx, machine.UpgradeMachine(state), detail, reporter, child)
        if run.machine.state == machine.FAILED and "failure" in detail:
            # Failed before a crash: the reason was journaled with the transition.
            run.failure = UpgradeFailed(detail["failure"]["status"], detail["failure"]["reason"])
        table = CHILD_STEPS if child else DEVICE_STEPS
        if request.task_id and self._tasks is not None and child:
            await self._tasks.note(
                request.task_id,
                request.device_id,
                request.sub_device_count,
                target=request.target,
                send=ctx.uplink.send,
            )
        try:
            while not run.machine.terminal:
                event = await table[run.machine.state](self._parts, run)
                await self._enter(run, event)
        except UpgradeFailed as failure:
            run.failure = failure
            await self._fail(run)
        except IllegalTransition as exc:
            ctx.log.error("upgrade.illegal_transition", state=exc.state, trigger=exc.event)
            run.failure = UpgradeFailed(UpgradeStatus.INTERNAL, str(exc))
            await self._fail(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must still end in a definite result
            ctx.log.exception("upgrade.crashed", state=run.machine.state)
            run.failure = UpgradeFailed(UpgradeStatus.INTERNAL, f"internal error: {exc!r}")
            await self._fail(run)
        return await self._conclude(run)

    async def _enter(self, run: Run, event: str) -> None:
        """Journal the transition, then let the new state's side effect happen."""
        target = run.machine.next_state(event)
        run.detail["state_since"] = self._clock()
        await self._journal.record_state(run.request.key, target, run.detail, self._clock())
        run.machine.fire(event)
        run.ctx.log.info("upgrade.state", state=target, trigger=event)
        failpoints.hit(f"upgrade.{target}")
        if not run.machine.terminal:
            await run.reporter.update(target, 0)

    async def _fail(self, run: Run) -> None:
        """Take the table's failure edge; the reason is journaled in the same write."""
        assert run.failure is not None  # noqa: S101
        if run.machine.terminal:
            return
        run.detail["failure"] = {"status": run.failure.status, "reason": run.failure.reason}
        await self._enter(run, machine.failure_event(run.machine.state))

    async def _conclude(self, run: Run) -> Outcome:
        request, state = run.request, run.machine.state
        # "upgrade_state": the dispatcher's summary line has a "state" of its own.
        summary: dict[str, Any] = {"upgrade_state": state, "version": request.version}
        replies: list[Outbound] = []
        if state == machine.DONE:
            await self.versions.record(request.device_id, request.target, request.version)
            replies.append(
                run.reporter.final(
                    UpgradeStatus.SUCCESS, "upgrade succeeded", version=request.version
                )
            )
            ok = True
            summary["status"] = UpgradeStatus.SUCCESS
        elif state == machine.ROLLED_BACK:
            ok = False
            summary["status"] = UpgradeStatus.ROLLED_BACK
            if not run.detail.get("rollback_reported"):
                replies.append(rolled_back_report(run))
        else:
            failure = run.failure or UpgradeFailed(UpgradeStatus.INTERNAL, "ended without a result")
            ok = False
            summary.update(status=failure.status, error=failure.reason)
            version = await self.running_version(request.device_id, request.target)
            replies.append(
                run.reporter.final(failure.status, failure.reason[:256], version=version)
            )
        pid = run.detail.get("package_id")
        if pid:
            keep = run.failure is not None and run.failure.status in _RESUMABLE
            await self._packages.release(pid, request.key, keep_partial=keep)
        if request.task_id and self._tasks is not None and run.child:
            await self._tasks.finished(request.task_id, request.device_id)
        return Outcome(ok=ok, summary=summary, replies=replies)

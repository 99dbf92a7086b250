"""The upgrade executor: the state machine for a device or a child, one journaled step at a time.

Each state has a step (a method below) that does that state's side effect and names the event
it ended with; the transition to the next state is journaled (``record_state``) before that
state's step runs, and a failpoint ``upgrade.<state>`` sits right after the write. After a
restart :meth:`UpgradeExecutor.recover` resumes from the journaled state with the journaled
detail, so a download resumes, a half-written slot is written again, and a pending reboot is
recognised; no phase earlier than one already reported is ever reported again.

Version queries are answered from the version store; an upgrade offer that could not be
decoded is answered with a failure naming what was wrong.

Long: the steps of the upgrade state machine, one method per state, read as one table.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
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
from agent.upgrade.download import check_url, redact_url
from agent.upgrade.installers.base import Installer, InstallJob
from agent.upgrade.packages import PackageCache, package_id
from agent.upgrade.progress import ProgressReporter, RateLimiter
from agent.upgrade.verify import Expectation, expectation
from agent.upgrade.versions import VersionStore

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-+]{0,254}$")
# Dispatcher states that mean "started, nothing of ours journaled yet".
_NOT_STARTED = frozenset({"running", "accepted"})
# Download failures that leave a part file worth resuming by a later attempt.
_RESUMABLE = frozenset({UpgradeStatus.DOWNLOAD_FAILED, UpgradeStatus.LINK_EXPIRED})
# The phases reported by default: those after the package is completely downloaded and
# verified (the safe reading of Huawei's FAQ, reference §6.6).
_AFTER_DOWNLOAD = frozenset(
    machine.STATES - {machine.RECEIVED, machine.CHECKING, machine.DOWNLOADING, machine.VERIFYING}
)
# Reported as the running version when neither the adapter, the configuration nor the platform
# said one: the platform's version field is mandatory and must not be empty (reference §6.7).
UNKNOWN_VERSION = "unknown"


@dataclass
class _Run:
    """One upgrade in progress."""

    request: UpgradeRequest
    ctx: Context
    machine: machine.UpgradeMachine
    detail: dict[str, Any]
    reporter: ProgressReporter
    child: bool
    expected: Expectation | None = None
    failure: UpgradeFailed | None = None
    extra: dict[str, Any] = field(default_factory=dict)


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
        self._child_slots = asyncio.Semaphore(settings.install_concurrency)
        self._steps = {
            machine.RECEIVED: self._received,
            machine.CHECKING: self._checking,
            machine.DOWNLOADING: self._downloading,
            machine.VERIFYING: self._verifying,
            machine.INSTALLING: self._installing,
            machine.ACTIVATING: self._activating,
            machine.REBOOTING: self._rebooting,
            machine.CONFIRMING: self._confirming,
            machine.ROLLING_BACK: self._rolling_back,
        }

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
            # An empty report would tell the platform nothing true (reference §6.3).
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
        """What a device runs: the child adapter's answer, else recorded or configured values.

        Each field is taken from the first source that knows it, so an adapter that tells only
        the firmware, or a platform notification without versions, never blanks the other.
        """
        stored = await self.versions.get(device_id)
        if device_id == self.agent_id or self._registry is None:
            return stored
        child = self._registry.get(device_id)
        if child is None:
            return stored
        found: dict[str, str | None] = {}
        adapter = self._adapters.get(child.type)
        if adapter is not None:
            found = await adapter.versions(child) or {}
        # The registry keeps what the platform said about a child across restarts.
        registered = {"firmware": child.fw_version, "software": child.sw_version}
        return {
            name: found.get(name) or stored.get(name) or registered[name] or None
            for name in ("firmware", "software")
        }

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
        return (await self._versions_of(device_id)).get(target) or ""

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
        run = _Run(request, ctx, machine.UpgradeMachine(state), detail, reporter, child)
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
                event = await self._steps[run.machine.state](run)
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

    async def _enter(self, run: _Run, event: str) -> None:
        """Journal the transition, then let the new state's side effect happen."""
        target = run.machine.next_state(event)
        run.detail["state_since"] = self._clock()
        await self._journal.record_state(run.request.key, target, run.detail, self._clock())
        run.machine.fire(event)
        run.ctx.log.info("upgrade.state", state=target, trigger=event)
        failpoints.hit(f"upgrade.{target}")
        if not run.machine.terminal:
            await run.reporter.update(target, 0)

    async def _fail(self, run: _Run) -> None:
        assert run.failure is not None  # noqa: S101
        state = run.machine.state
        if state in machine.TERMINAL:
            return
        event = "refused" if state == machine.CHECKING else "failed"
        if (state, event) not in machine.TRANSITIONS:
            # No failure edge (received/rolling back): record the end all the same.
            run.machine.state = machine.FAILED
            await self._journal.record_state(
                run.request.key, machine.FAILED, run.detail, self._clock()
            )
            return
        await self._enter(run, event)

    async def _conclude(self, run: _Run) -> Outcome:
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
                replies.append(self._rolled_back_report(run))
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

    def _rolled_back_report(self, run: _Run) -> UpgradeProgress:
        previous = run.detail.get("previous_version") or UNKNOWN_VERSION
        return run.reporter.final(
            UpgradeStatus.ROLLED_BACK,
            f"version {run.request.version} did not confirm; rolled back to {previous}",
            version=previous,
        )

    # -- the steps (one per state) ----------------------------------------------------------

    async def _received(self, run: _Run) -> str:
        return "start"

    async def _checking(self, run: _Run) -> str:
        request = run.request
        if not self.settings.enabled:
            raise UpgradeFailed(
                UpgradeStatus.UNSUPPORTED, "upgrades are not enabled on this device"
            )
        if await self._current(request.device_id, request.target) == request.version:
            run.ctx.log.info("upgrade.already_installed", version=request.version)
            return "already_installed"
        if request.file_name is not None and not _FILE_NAME.fullmatch(request.file_name):
            raise UpgradeFailed(
                UpgradeStatus.UNSUPPORTED,
                f"file_name {request.file_name[:64]!r} is not a plain file name",
            )
        check_url(request.url, self.settings.allow_http_hosts)
        if request.file_size is not None and request.file_size > self.settings.max_package_bytes:
            raise UpgradeFailed(
                UpgradeStatus.UNSUPPORTED,
                f"package of {request.file_size} bytes exceeds upgrades.max_package_bytes",
            )
        expectation(request, self._keys)  # a signed manifest is checked before any download
        if run.child:
            child = self._registry.get(request.device_id) if self._registry else None
            if child is None or child.type not in self._adapters:
                raise UpgradeFailed(UpgradeStatus.UNSUPPORTED, "no adapter for this child's type")
        return "needed"

    def _expected(self, run: _Run) -> Expectation:
        if run.expected is None:
            run.expected = expectation(run.request, self._keys)
            pid = package_id(run.request, run.expected)
            run.detail["package_id"] = pid
            self._packages.acquire(pid, run.request.key)
            if run.request.task_id and self._tasks is not None and run.child:
                self._packages.acquire(pid, f"task:{run.request.task_id}")
        return run.expected

    async def _downloading(self, run: _Run) -> str:
        expected = self._expected(run)
        pid = run.detail["package_id"]
        if run.request.task_id and self._tasks is not None and run.child:
            await self._tasks.note(
                run.request.task_id,
                run.request.device_id,
                run.request.sub_device_count,
                package_id=pid,
                target=run.request.target,
                send=run.ctx.uplink.send,
            )
        run.ctx.log.info("upgrade.download", url=redact_url(run.request.url), size=expected.size)

        async def progress(percent: int) -> None:
            await run.reporter.update(machine.DOWNLOADING, percent)

        await self._packages.download(pid, run.request.key, run.request, expected, progress)
        return "downloaded"

    async def _verifying(self, run: _Run) -> str:
        expected = self._expected(run)
        _, sha256 = await self._packages.verify(run.detail["package_id"], expected)
        run.detail["image_sha256"] = sha256
        run.ctx.log.info("upgrade.verified", sha256=sha256, signed=expected.signed)
        return "verified"

    def _job(self, run: _Run) -> InstallJob:
        pid = run.detail["package_id"]
        return InstallJob(
            device_id=run.request.device_id,
            target=run.request.target,
            version=run.request.version,
            previous_version=run.detail.get("previous_version", ""),
            image=self._packages.image(pid),
            sha256=run.detail["image_sha256"],
            file_name=run.request.file_name,
            task_ext_info=run.request.task_ext_info or {},
        )

    async def _installing(self, run: _Run) -> str:
        self._expected(run)
        if "image_sha256" not in run.detail:
            await self._verifying(run)
        else:
            # After a restart: the image must still be the verified one before it is used.
            _, run.detail["image_sha256"] = await self._packages.verify(
                run.detail["package_id"], self._expected(run)
            )
        job = self._job(run)

        async def progress(percent: int) -> None:
            await run.reporter.update(machine.INSTALLING, percent)

        if run.child:
            child = self._registry.get(job.device_id) if self._registry else None
            assert child is not None  # noqa: S101 - checked in the checking step
            async with self._child_slots:
                await self._adapters[child.type].install(child, job.image, job.version, job.target)
            await progress(100)
        else:
            await self._installer.install(job, run.detail, progress)
        return "installed"

    async def _activating(self, run: _Run) -> str:
        if run.child:
            return "active"
        needs_reboot = await self._installer.activate(self._job(run), run.detail)
        return "needs_reboot" if needs_reboot else "active"

    async def _rebooting(self, run: _Run) -> str:
        if self._installer.rebooted(run.detail):
            return "rebooted"
        run.ctx.log.info("upgrade.reboot_requested")
        await self._installer.reboot(self._job(run), run.detail)
        # The reboot ends this process; until then there is nothing more to do.
        await asyncio.Event().wait()
        return "rebooted"  # pragma: no cover - never reached

    async def _confirming(self, run: _Run) -> str:
        if run.child:
            child = self._registry.get(run.request.device_id) if self._registry else None
            adapter = self._adapters.get(child.type) if child else None
            if child is not None and adapter is not None:
                found = await adapter.versions(child)
                if found is not None and found.get(run.request.target) not in (
                    None,
                    run.request.version,
                ):
                    raise UpgradeFailed(
                        UpgradeStatus.INSTALL_FAILED,
                        f"child reports {found.get(run.request.target)!r} after the install",
                    )
            return "confirmed"
        confirmed = await self._installer.confirm(self._job(run), run.detail)
        return "confirmed" if confirmed else "not_confirmed"

    async def _rolling_back(self, run: _Run) -> str:
        if run.child:
            return "restored"
        needs_reboot = await self._installer.rollback(self._job(run), run.detail)
        if not needs_reboot:
            return "restored"
        if not run.detail.get("rollback_reported"):
            # The reboot may come before the subtask's end is journaled: report first.
            await run.ctx.uplink.send([self._rolled_back_report(run)])
            run.detail["rollback_reported"] = True
            run.detail["boot_id_before_rollback"] = run.detail.get("boot_id")
            await self._journal.record_state(
                run.request.key, machine.ROLLING_BACK, run.detail, self._clock()
            )
        with contextlib.suppress(UpgradeFailed):
            await self._installer.reboot(self._job(run), run.detail)
        return "restored"

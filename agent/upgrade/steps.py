"""The device's upgrade steps: one per state, each does its side effect and names its event.

A step never moves the machine and never calls another step: it returns the event it ended
with (or raises :class:`~agent.upgrade.failures.UpgradeFailed`), and the executor journals the
transition the table (:mod:`agent.upgrade.machine`) gives for it. :data:`DEVICE_STEPS` is the
table for this device; a gateway's children have their own (:mod:`agent.upgrade.child_steps`),
sharing the steps up to verification from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.config.upgrades import UpgradeSettings
from agent.core.errors import UpgradeFailed
from agent.core.model import UpgradeProgress, UpgradeRequest, UpgradeStatus
from agent.gateway.adapters import ChildAdapter
from agent.gateway.registry import ChildRegistry
from agent.gateway.tasks import TaskGroups
from agent.journal.base import Journal
from agent.pipeline.executor import Context
from agent.runtime import failpoints
from agent.upgrade import machine
from agent.upgrade.installers.base import Installer, InstallJob
from agent.upgrade.installers.self_update import SelfUpdater
from agent.upgrade.packages import PackageCache, package_id
from agent.upgrade.progress import ProgressReporter
from agent.upgrade.urls import check_url, redact_url
from agent.upgrade.verify import Expectation, expectation, require_digest
from agent.upgrade.versions import VersionStore

# "~" is in Debian versions, hence in package file names (device-agent_1.0~rc1_amd64.deb).
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-+~]{0,254}$")
# Reported as the running version when neither the adapter, the configuration nor the platform
# said one: the platform's version field is mandatory (iot_06_v5_3031) and, we infer, must
# not be empty.
UNKNOWN_VERSION = "unknown"


def is_plain_file_name(name: str) -> bool:
    """Whether an offer's ``file_name`` is one plain name: no path, no leading dot or dash."""
    return _FILE_NAME.fullmatch(name) is not None


@dataclass
class Run:
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


@dataclass
class Parts:
    """What the steps work with (one set per agent)."""

    agent_id: str
    settings: UpgradeSettings
    journal: Journal
    installer: Installer
    packages: PackageCache
    versions: VersionStore
    keys: list[Any]
    registry: ChildRegistry | None
    adapters: dict[str, ChildAdapter]
    tasks: TaskGroups | None
    clock: Callable[[], float] = time.time
    child_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(4))
    # Installs a device-agent package through root (None: such a package is like any other).
    self_update: SelfUpdater | None = None

    def installer_for(self, run: Run) -> Installer:
        """The self-updater once the upgrade was handed over as one, else the configured one."""
        if self.self_update is not None and "self_update" in run.detail:
            return self.self_update
        return self.installer

    async def versions_of(self, device_id: str) -> dict[str, str | None]:
        """What a device runs: the child adapter's answer, else recorded or configured values.

        Each field is taken from the first source that knows it, so an adapter that tells only
        the firmware, or a platform notification without versions, never blanks the other.
        """
        stored = await self.versions.get(device_id)
        if device_id == self.agent_id or self.registry is None:
            return stored
        child = self.registry.get(device_id)
        if child is None:
            return stored
        found: dict[str, str | None] = {}
        adapter = self.adapters.get(child.type)
        if adapter is not None:
            found = await adapter.versions(child) or {}
        # The registry keeps what the platform said about a child across restarts.
        registered = {"firmware": child.fw_version, "software": child.sw_version}
        return {
            name: found.get(name) or stored.get(name) or registered[name] or None
            for name in ("firmware", "software")
        }

    async def current(self, device_id: str, target: str) -> str:
        """The version of ``target`` a device runs now ("" when unknown)."""
        return (await self.versions_of(device_id)).get(target) or ""

    def job(self, run: Run) -> InstallJob:
        """The verified package, as an installer sees it."""
        pid = run.detail["package_id"]
        return InstallJob(
            device_id=run.request.device_id,
            target=run.request.target,
            version=run.request.version,
            previous_version=run.detail.get("previous_version", ""),
            image=self.packages.image(pid),
            sha256=run.detail["image_sha256"],
            file_name=run.request.file_name,
            task_ext_info=run.request.task_ext_info or {},
        )

    def expected(self, run: Run) -> Expectation:
        """What the package must be; names the package and holds it for this subtask."""
        if run.expected is None:
            run.expected = expectation(run.request, self.keys)
            pid = package_id(run.request, run.expected)
            run.detail["package_id"] = pid
            self.packages.acquire(pid, run.request.key)
            if run.request.task_id and self.tasks is not None and run.child:
                self.packages.acquire(pid, f"task:{run.request.task_id}")
        return run.expected

    async def ensure_verified(self, run: Run) -> None:
        """The image is the verified one (hashed again after a restart) before it is used."""
        expected = self.expected(run)
        _, sha256 = await self.packages.verify(run.detail["package_id"], expected)
        run.detail["image_sha256"] = sha256
        run.ctx.log.info("upgrade.verified", sha256=sha256, signed=expected.signed)


Step = Callable[[Parts, Run], Awaitable[str]]


# -- shared by the device and its children ----------------------------------------------------


async def received(parts: Parts, run: Run) -> str:
    """Nothing to do yet."""
    return "start"


async def checking(parts: Parts, run: Run) -> str:
    """Whether the offer is acceptable and still needed (nothing is fetched yet)."""
    request = run.request
    if not parts.settings.enabled:
        raise UpgradeFailed(UpgradeStatus.UNSUPPORTED, "upgrades are not enabled on this device")
    if await parts.current(request.device_id, request.target) == request.version:
        run.ctx.log.info("upgrade.already_installed", version=request.version)
        return "already_installed"
    if request.file_name is not None and not is_plain_file_name(request.file_name):
        raise UpgradeFailed(
            UpgradeStatus.UNSUPPORTED,
            f"file_name {request.file_name[:64]!r} is not a plain file name",
        )
    check_url(request.url, parts.settings)
    if request.file_size is not None and request.file_size > parts.settings.max_package_bytes:
        raise UpgradeFailed(
            UpgradeStatus.UNSUPPORTED,
            f"package of {request.file_size} bytes exceeds upgrades.max_package_bytes",
        )
    # A signed manifest is checked before any download; without any digest, no download.
    expected = expectation(request, parts.keys)
    require_digest(expected, request.url, parts.settings.allow_unsigned_hosts)
    return "needed"


async def downloading(parts: Parts, run: Run) -> str:
    """The package, downloaded (or found downloaded) and matching what it must be."""
    expected = parts.expected(run)
    run.ctx.log.info("upgrade.download", url=redact_url(run.request.url), size=expected.size)

    async def progress(percent: int) -> None:
        await run.reporter.update(machine.DOWNLOADING, percent)

    await parts.packages.download(
        run.detail["package_id"], run.request.key, run.request, expected, progress
    )
    return "downloaded"


async def verifying(parts: Parts, run: Run) -> str:
    """The download hashed once more from disk and kept as the verified image."""
    await parts.ensure_verified(run)
    return "verified"


# -- this device ------------------------------------------------------------------------------


async def installing(parts: Parts, run: Run) -> str:
    """The installer puts the verified image in place (not yet active)."""
    await parts.ensure_verified(run)
    updater = parts.self_update
    if updater is not None and "self_update" not in run.detail and updater.owns(parts.job(run)):
        plan = updater.plan(parts.job(run))
        run.detail["self_update"] = plan
        run.detail["previous_version"] = plan["previous_version"]
        # Journaled before the handover: the restarted agent and a rollback start from this.
        await parts.journal.record_state(
            run.request.key, machine.INSTALLING, run.detail, parts.clock()
        )
        run.ctx.log.info("upgrade.self.planned", **plan)
        failpoints.hit("upgrade.self.planned")

    async def progress(percent: int) -> None:
        await run.reporter.update(machine.INSTALLING, percent)

    await parts.installer_for(run).install(parts.job(run), run.detail, progress)
    return "installed"


async def activating(parts: Parts, run: Run) -> str:
    """The installed image becomes the one that runs (now, or after a reboot)."""
    needs_reboot = await parts.installer_for(run).activate(parts.job(run), run.detail)
    return "needs_reboot" if needs_reboot else "active"


async def rebooting(parts: Parts, run: Run) -> str:
    """Ask for the reboot; the next process finds the device rebooted."""
    installer = parts.installer_for(run)
    if installer.rebooted(run.detail):
        return "rebooted"
    run.ctx.log.info("upgrade.reboot_requested")
    await installer.reboot(parts.job(run), run.detail)
    if installer.rebooted(run.detail):
        return "rebooted"  # a self-update that root rolled back before any restart
    # The reboot ends this process; until then there is nothing more to do.
    await asyncio.Event().wait()
    return "rebooted"  # pragma: no cover - never reached


async def confirming(parts: Parts, run: Run) -> str:
    """The new version works (or it does not, and is rolled back)."""
    confirmed = await parts.installer_for(run).confirm(parts.job(run), run.detail)
    return "confirmed" if confirmed else "not_confirmed"


def rolled_back_report(run: Run) -> UpgradeProgress:
    """The final report of an upgrade rolled back to the previous version."""
    previous = run.detail.get("previous_version") or UNKNOWN_VERSION
    # The self-update's reason comes from root's verdict (what happened and what is back).
    reason = run.detail.get("rollback_reason") or (
        f"version {run.request.version} did not confirm; rolled back to {previous}"
    )
    return run.reporter.final(UpgradeStatus.ROLLED_BACK, reason[:256], version=previous)


async def rolling_back(parts: Parts, run: Run) -> str:
    """The previous version back in place (rebooting into it if that is what it takes)."""
    installer = parts.installer_for(run)
    needs_reboot = await installer.rollback(parts.job(run), run.detail)
    if not needs_reboot:
        return "restored"
    if not run.detail.get("rollback_reported"):
        # The reboot may come before the subtask's end is journaled: report first.
        await run.ctx.uplink.send([rolled_back_report(run)])
        run.detail["rollback_reported"] = True
        run.detail["boot_id_before_rollback"] = run.detail.get("boot_id")
        # The same state with more detail: no transition, so straight to the journal.
        await parts.journal.record_state(
            run.request.key, machine.ROLLING_BACK, run.detail, parts.clock()
        )
    with contextlib.suppress(UpgradeFailed):
        await installer.reboot(parts.job(run), run.detail)
    return "restored"


DEVICE_STEPS: dict[str, Step] = {
    machine.RECEIVED: received,
    machine.CHECKING: checking,
    machine.DOWNLOADING: downloading,
    machine.VERIFYING: verifying,
    machine.INSTALLING: installing,
    machine.ACTIVATING: activating,
    machine.REBOOTING: rebooting,
    machine.CONFIRMING: confirming,
    machine.ROLLING_BACK: rolling_back,
}

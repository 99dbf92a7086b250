"""A gateway child's upgrade steps: the device's steps up to verification, then its adapter.

Children have no reboot and no rollback of their own: the adapter installs, the child's
reported version confirms. Gateway tasks are told which package a child needs, so one
download serves the whole task.
"""

from __future__ import annotations

from agent.core.errors import UpgradeFailed
from agent.core.model import UpgradeStatus
from agent.upgrade import machine, steps
from agent.upgrade.steps import Parts, Run, Step


async def checking(parts: Parts, run: Run) -> str:
    """The device's checks, and an adapter for this child's type."""
    event = await steps.checking(parts, run)
    if event != "needed":
        return event
    child = parts.registry.get(run.request.device_id) if parts.registry else None
    if child is None or child.type not in parts.adapters:
        raise UpgradeFailed(UpgradeStatus.UNSUPPORTED, "no adapter for this child's type")
    return event


async def downloading(parts: Parts, run: Run) -> str:
    """The task learns which package this child waits for; then the shared download."""
    request = run.request
    parts.expected(run)
    pid = run.detail["package_id"]
    if request.task_id and parts.tasks is not None:
        await parts.tasks.note(
            request.task_id,
            request.device_id,
            request.sub_device_count,
            package_id=pid,
            target=request.target,
            send=run.ctx.uplink.send,
        )
    return await steps.downloading(parts, run)


async def installing(parts: Parts, run: Run) -> str:
    """The child's adapter installs the verified image (a bounded number at a time)."""
    await parts.ensure_verified(run)
    job = parts.job(run)
    child = parts.registry.get(job.device_id) if parts.registry else None
    if child is None:
        raise UpgradeFailed(UpgradeStatus.UNSUPPORTED, "the child is no longer known")
    async with parts.child_slots:
        await parts.adapters[child.type].install(child, job.image, job.version, job.target)
    await run.reporter.update(machine.INSTALLING, 100)
    return "installed"


async def activating(parts: Parts, run: Run) -> str:
    """An adapter's install is active once it returns."""
    return "active"


async def confirming(parts: Parts, run: Run) -> str:
    """The child, asked again, does not contradict the new version."""
    request = run.request
    child = parts.registry.get(request.device_id) if parts.registry else None
    adapter = parts.adapters.get(child.type) if child else None
    if child is not None and adapter is not None:
        found = await adapter.versions(child)
        reported = None if found is None else found.get(request.target)
        if reported not in (None, request.version):
            raise UpgradeFailed(
                UpgradeStatus.INSTALL_FAILED, f"child reports {reported!r} after the install"
            )
    return "confirmed"


async def rolling_back(parts: Parts, run: Run) -> str:
    """Nothing of a child's to restore (reached only if a confirmation said no)."""
    return "restored"


CHILD_STEPS: dict[str, Step] = {
    machine.RECEIVED: steps.received,
    machine.CHECKING: checking,
    machine.DOWNLOADING: downloading,
    machine.VERIFYING: steps.verifying,
    machine.INSTALLING: installing,
    machine.ACTIVATING: activating,
    machine.CONFIRMING: confirming,
    machine.ROLLING_BACK: rolling_back,
}

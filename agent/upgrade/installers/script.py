"""The script installer: an allow-listed executable does the installing.

It runs as ``argv + [phase, image, version]`` with ``phase`` one of ``install``, ``confirm``
(after a reboot, when enabled) and ``rollback``; context arrives in ``DEVICE_AGENT_*``
environment variables. Exit 0 is success; ``reboot_exit_code`` means "installed, active after a
reboot"; other exit codes map through ``exit_codes`` (unlisted: ``install_failed``). The script
must be idempotent: after a crash it is run again with the same arguments. When the agent runs
sandboxed, the script is where a privileged helper is called (see docs/upgrades.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.config.upgrades import ScriptInstaller
from agent.core.errors import ExecutionError, UpgradeFailed
from agent.core.model import UpgradeStatus
from agent.executors.process import run_process
from agent.upgrade.installers.base import InstallJob, ProgressFn, read_boot_id, run_program

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class ScriptInstallerImpl:
    """An :class:`~agent.upgrade.installers.base.Installer` driving an executable."""

    def __init__(
        self,
        settings: ScriptInstaller,
        *,
        allowed_dirs: list[Path],
        log: Any,
        boot_id: Path = _BOOT_ID,
    ) -> None:
        self.settings = settings
        self._allowed = allowed_dirs
        self._log = log
        self._boot_id = boot_id

    async def _run(self, phase: str, job: InstallJob) -> int:
        env = {
            "DEVICE_AGENT_PHASE": phase,
            "DEVICE_AGENT_DEVICE_ID": job.device_id,
            "DEVICE_AGENT_TARGET": job.target,
            "DEVICE_AGENT_VERSION": job.version,
            "DEVICE_AGENT_PREVIOUS_VERSION": job.previous_version,
            "DEVICE_AGENT_IMAGE": str(job.image),
            "DEVICE_AGENT_SHA256": job.sha256,
            "DEVICE_AGENT_FILE_NAME": job.file_name or "",
            "DEVICE_AGENT_TASK_EXT_INFO": json.dumps(job.task_ext_info),
        }
        try:
            outcome = await run_process(
                [*self.settings.argv, phase, str(job.image), job.version],
                stdin=b"",
                env=env,
                timeout_s=self.settings.timeout_s,
                kill_grace_s=5.0,
                max_output_bytes=65536,
                allowed_dirs=self._allowed,
            )
        except ExecutionError as exc:
            raise UpgradeFailed(UpgradeStatus.INSTALL_FAILED, exc.reason) from exc
        if outcome.stderr_tail:
            self._log.info("upgrade.script.stderr", phase=phase, tail=outcome.stderr_tail)
        if outcome.timed_out:
            raise UpgradeFailed(
                UpgradeStatus.INSTALL_FAILED,
                f"install script did not finish its {phase} within {self.settings.timeout_s} s",
            )
        assert outcome.exit_code is not None  # noqa: S101 - set unless timed out
        return outcome.exit_code

    async def install(self, job: InstallJob, detail: dict[str, Any], progress: ProgressFn) -> None:
        """Run the ``install`` phase and map its exit code."""
        code = await self._run("install", job)
        if code == self.settings.reboot_exit_code:
            detail["needs_reboot"] = True
            return
        if code != 0:
            status = self.settings.exit_codes.get(str(code), UpgradeStatus.INSTALL_FAILED)
            raise UpgradeFailed(status, f"install script exited with {code}")
        await progress(100)

    async def activate(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """The script activated it already; a reboot if it said so."""
        if detail.get("needs_reboot"):
            detail["boot_id"] = read_boot_id(self._boot_id)
            return True
        return False

    async def reboot(self, job: InstallJob, detail: dict[str, Any]) -> None:
        """Run the configured reboot program, if any (else the operator reboots)."""
        if self.settings.reboot is not None:
            await run_program(self.settings.reboot, [], self._allowed, self._log, "reboot")

    def rebooted(self, detail: dict[str, Any]) -> bool:
        """Whether the boot id changed since activation."""
        return read_boot_id(self._boot_id) != detail.get("boot_id")

    async def confirm(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """Run the ``confirm`` phase when configured; exit 0 confirms."""
        if not self.settings.confirm:
            return True
        return await self._run("confirm", job) == 0

    async def rollback(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """Run the ``rollback`` phase (best effort)."""
        code = await self._run("rollback", job)
        if code != 0:
            self._log.error("upgrade.script.rollback_failed", exit_code=code)
        return code == self.settings.reboot_exit_code

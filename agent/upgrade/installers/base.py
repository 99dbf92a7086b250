"""The installer contract: install, activate, (reboot), confirm, roll back, each resumable.

Every step may be called again after a crash in the middle of it, so each must be idempotent:
writing a slot again, switching to the same slot again, confirming again. ``detail`` is the
subtask's journaled detail; a step may add what later steps (or a later process) need, and the
executor journals it with the next state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.config.upgrades import Program
from agent.core.errors import ExecutionError, UpgradeFailed
from agent.core.model import UpgradeStatus
from agent.executors.process import run_process

ProgressFn = Callable[[int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class InstallJob:
    """One verified package to put in place."""

    device_id: str
    target: str  # "firmware" or "software"
    version: str
    previous_version: str
    image: Path
    sha256: str
    file_name: str | None = None
    task_ext_info: dict[str, Any] = field(default_factory=dict)


class Installer(Protocol):
    """Turns a verified package into the running version."""

    async def install(self, job: InstallJob, detail: dict[str, Any], progress: ProgressFn) -> None:
        """Put the package in place without activating it.

        Raises:
            UpgradeFailed: with the status to report.
        """

    async def activate(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """Make the installed package the one that runs; True when that takes a reboot."""

    async def reboot(self, job: InstallJob, detail: dict[str, Any]) -> None:
        """Ask for the reboot (returns when asked; the reboot itself ends this process)."""

    def rebooted(self, detail: dict[str, Any]) -> bool:
        """Whether the device has rebooted since :meth:`activate` recorded the boot."""

    async def confirm(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """Whether the new version runs and is healthy (False: roll back)."""

    async def rollback(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """Go back to the previous version; True when that takes a reboot."""


def read_boot_id(path: Path) -> str:
    """The current boot's identity (empty when unreadable: then no reboot is ever detected)."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


async def run_program(
    program: Program, args: list[str], allowed_dirs: list[Path], log: Any, what: str
) -> int:
    """Run a configured helper program to completion; returns its exit code.

    Raises:
        UpgradeFailed: it is not allow-listed, cannot start, or overran its deadline.
    """
    try:
        outcome = await run_process(
            [*program.argv, *args],
            stdin=b"",
            env={},
            timeout_s=program.timeout_s,
            kill_grace_s=5.0,
            max_output_bytes=65536,
            allowed_dirs=allowed_dirs,
        )
    except ExecutionError as exc:
        raise UpgradeFailed(UpgradeStatus.INSTALL_FAILED, f"{what}: {exc.reason}") from exc
    if outcome.stderr_tail:
        log.info("upgrade.helper.stderr", helper=what, tail=outcome.stderr_tail)
    if outcome.timed_out or outcome.exit_code is None:
        raise UpgradeFailed(
            UpgradeStatus.INSTALL_FAILED, f"{what} did not finish within {program.timeout_s} s"
        )
    return outcome.exit_code

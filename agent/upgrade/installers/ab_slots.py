"""The A/B installer: write the inactive slot, switch atomically, confirm after the reboot.

The slot layout is recorded in ``state_file`` (JSON, replaced atomically)::

    {"active": 0, "slots": [{"version": "1.0", "sha256": "..."}, {"version": null, ...}],
     "pending": {"slot": 1, "version": "2.0", "previous": 0, "boot_id": "...", "at": ...}}

Before a slot is written its record is cleared, so a half-written slot is never described as
holding anything; after writing, the slot is read back and hashed, and only a slot whose bytes
match the verified package is ever switched to. The switch is one atomic rename (plus the
optional ``switch`` program, e.g. the boot loader's environment through a privileged helper).
With a ``reboot`` program the new slot runs after a reboot, detected by a changed boot id;
without one (simulation) it counts as running at once. The new version must then pass the
``health`` program (when given) within ``confirm_timeout_s`` of activation, or the previous
slot is switched back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from agent.config.upgrades import AbSlotsInstaller
from agent.core.errors import UpgradeFailed
from agent.core.model import UpgradeStatus
from agent.runtime.files import write_atomically
from agent.upgrade.installers.base import InstallJob, ProgressFn, read_boot_id, run_program

_CHUNK = 1024 * 1024


class AbSlotsInstallerImpl:
    """An :class:`~agent.upgrade.installers.base.Installer` over two slots."""

    def __init__(
        self,
        settings: AbSlotsInstaller,
        *,
        initial_version: str,
        allowed_dirs: list[Path],
        log: Any,
        wall_clock: Any = time.time,
    ) -> None:
        self.settings = settings
        self._initial = initial_version
        self._allowed = allowed_dirs
        self._log = log
        self._wall = wall_clock

    # -- the state file -------------------------------------------------------------------

    def read_state(self) -> dict[str, Any]:
        """The recorded slot layout (the first slot active with the initial version if none)."""
        try:
            state = json.loads(self.settings.state_file.read_text())
        except FileNotFoundError:
            return {
                "active": 0,
                "slots": [
                    {"version": self._initial, "sha256": None},
                    {"version": None, "sha256": None},
                ],
                "pending": None,
            }
        except (OSError, ValueError) as exc:
            raise UpgradeFailed(UpgradeStatus.INTERNAL, f"slot state unreadable: {exc}") from exc
        return dict(state)

    def _write_state(self, state: dict[str, Any]) -> None:
        path = self.settings.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(state).encode(), mode=0o644)

    def running_version(self) -> str | None:
        """The version in the active slot."""
        state = self.read_state()
        version = state["slots"][state["active"]].get("version")
        return None if version is None else str(version)

    # -- the steps ------------------------------------------------------------------------

    async def install(self, job: InstallJob, detail: dict[str, Any], progress: ProgressFn) -> None:
        """Write the package into the inactive slot and check it reads back intact."""
        state = self.read_state()
        if state.get("pending"):
            # A previous upgrade was switched to but never confirmed: finish that first.
            raise UpgradeFailed(UpgradeStatus.DEVICE_BUSY, "another upgrade awaits confirmation")
        slot = 1 - int(state["active"])
        detail["slot"] = slot
        state["slots"][slot] = {"version": None, "sha256": None}
        await asyncio.to_thread(self._write_state, state)
        target = self.settings.slots[slot]
        try:
            digest = await self._copy(job.image, target, progress)
        except OSError as exc:
            raise UpgradeFailed(
                UpgradeStatus.INSTALL_FAILED, f"writing slot {target}: {exc}"
            ) from exc
        if digest != job.sha256:
            raise UpgradeFailed(
                UpgradeStatus.INSTALL_FAILED, f"slot {target} does not read back as written"
            )
        state["slots"][slot] = {"version": job.version, "sha256": digest}
        await asyncio.to_thread(self._write_state, state)

    async def _copy(self, image: Path, target: Path, progress: ProgressFn) -> str:
        size = await asyncio.to_thread(lambda: image.stat().st_size)
        loop = asyncio.get_running_loop()

        def write() -> None:
            flags = os.O_WRONLY | os.O_CREAT
            with image.open("rb") as src:
                fd = os.open(target, flags, 0o600)
                try:
                    done = 0
                    while chunk := src.read(_CHUNK):
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                        done += len(chunk)
                        if done % (16 * _CHUNK) < _CHUNK:
                            percent = done * 100 // max(size, 1)
                            loop.call_soon_threadsafe(_report, progress, percent)
                    if target.is_file():
                        os.ftruncate(fd, size)
                    os.fsync(fd)
                finally:
                    os.close(fd)

        def read_back() -> str:
            digest = hashlib.sha256()
            remaining = size
            with target.open("rb") as fh:
                while remaining > 0 and (chunk := fh.read(min(_CHUNK, remaining))):
                    digest.update(chunk)
                    remaining -= len(chunk)
            return digest.hexdigest()

        await asyncio.to_thread(write)
        await progress(100)
        return await asyncio.to_thread(read_back)

    async def activate(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """Switch to the written slot (atomically); True when a reboot makes it run."""
        state = self.read_state()
        slot = int(detail["slot"])
        if state["slots"][slot].get("sha256") != job.sha256:
            raise UpgradeFailed(
                UpgradeStatus.INSTALL_FAILED, "the new slot does not hold the package"
            )
        previous = (
            int(state["active"]) if not state.get("pending") else int(state["pending"]["previous"])
        )
        if self.settings.switch is not None:
            code = await run_program(
                self.settings.switch,
                [str(slot), str(self.settings.slots[slot])],
                self._allowed,
                self._log,
                "switch",
            )
            if code != 0:
                raise UpgradeFailed(
                    UpgradeStatus.INSTALL_FAILED, f"switch program exited with {code}"
                )
        boot_id = read_boot_id(self.settings.boot_id_file)
        needs_reboot = self.settings.reboot is not None
        state["pending"] = {
            "slot": slot,
            "version": job.version,
            "previous": previous,
            "boot_id": boot_id,
            "at": self._wall(),
        }
        if not needs_reboot:
            state["active"] = slot
        await asyncio.to_thread(self._write_state, state)
        detail["boot_id"] = boot_id
        detail["activated_at"] = state["pending"]["at"]
        return needs_reboot

    async def reboot(self, job: InstallJob, detail: dict[str, Any]) -> None:
        """Run the reboot program."""
        if self.settings.reboot is not None:
            await run_program(self.settings.reboot, [], self._allowed, self._log, "reboot")

    def rebooted(self, detail: dict[str, Any]) -> bool:
        """The boot id changed: the boot loader started the pending slot (trial boot)."""
        if read_boot_id(self.settings.boot_id_file) == detail.get("boot_id"):
            return False
        state = self.read_state()
        pending = state.get("pending")
        if pending and state["active"] != pending["slot"]:
            state["active"] = pending["slot"]
            self._write_state(state)
        return True

    async def confirm(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """Health-check the new slot until it passes or ``confirm_timeout_s`` runs out."""
        deadline = float(detail.get("activated_at", self._wall())) + self.settings.confirm_timeout_s
        state = self.read_state()
        pending = state.get("pending")
        if pending is None:
            # Confirmed before a crash: the active slot says what runs.
            return bool(state["slots"][state["active"]].get("version") == job.version)
        while True:
            if self.settings.health is None:
                healthy = True
            else:
                healthy = (
                    await run_program(
                        self.settings.health, [job.version], self._allowed, self._log, "health"
                    )
                    == 0
                )
            if healthy and state["active"] == pending["slot"]:
                state["pending"] = None
                await asyncio.to_thread(self._write_state, state)
                return True
            if self._wall() >= deadline:
                return False
            await asyncio.sleep(
                min(self.settings.health_interval_s, max(0.0, deadline - self._wall()))
            )

    async def rollback(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """Switch back to the previous slot; True when the device must reboot into it."""
        state = self.read_state()
        pending = state.get("pending")
        if pending is None:
            return False
        previous = int(pending["previous"])
        if self.settings.switch is not None:
            await run_program(
                self.settings.switch,
                [str(previous), str(self.settings.slots[previous])],
                self._allowed,
                self._log,
                "switch",
            )
        running_new = state["active"] == pending["slot"] and self.settings.reboot is not None
        state["active"] = previous
        state["slots"][pending["slot"]] = {"version": None, "sha256": None}
        state["pending"] = None
        await asyncio.to_thread(self._write_state, state)
        return running_new


def _report(progress: ProgressFn, percent: int) -> None:
    """Schedule a progress report on the loop (called from the writer thread)."""
    asyncio.ensure_future(progress(percent))  # noqa: RUF006 - reports are best effort

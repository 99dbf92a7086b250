"""The agent updating itself: a verified device-agent ``.deb`` goes to root, then is confirmed.

The unprivileged agent never runs dpkg. Its installing step journals the handover ("installing
self, expecting version X, deadline T, previous package P", :meth:`SelfUpdater.plan`) and then
asks root (``self-install``, :mod:`agent.runtime.self_install`) to install the package. The
service restarts into the new version (the package's postinst does that under systemd); the old
process waits in ``rebooting`` until it is replaced. The new process finds the upgrade open in
the journal, sees that it runs the expected version, and once READY asks root to accept it
(``self-confirm``); then the upgrade is done and reported by the new agent. If the new agent
never gets there, root reinstalls the previous package at the deadline, and whichever agent
runs next reads root's verdict and reports the rollback with its reason.

The steps map onto the installer contract: ``install`` hands over, ``activate`` says a restart is
needed, ``rebooted`` means "the running agent is the expected version (or root has decided)",
``confirm`` asks root, ``rollback`` waits for root's reinstall.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config.upgrades import SelfUpdateSettings
from agent.core.errors import UpgradeFailed
from agent.core.model import UpgradeStatus
from agent.runtime.debs import NotAPackage, control_fields
from agent.runtime.privileged import REFUSED, RESULTS, Answer, collect, submit, withdraw
from agent.runtime.self_install import PACKAGE, kept_package, status_path
from agent.upgrade.installers.base import InstallJob, ProgressFn

# Root's verdicts after which nothing more will change.
_ROLLED_BACK = frozenset({"rolled_back", "rollback_failed"})
_POLL_S = 1.0


class SelfUpdater:
    """An :class:`~agent.upgrade.installers.base.Installer` for the agent's own package."""

    def __init__(
        self,
        settings: SelfUpdateSettings,
        *,
        running_version: str,
        log: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.running_version = running_version
        self._log = log
        self._clock = clock
        # Set once the daemon has sent READY=1: only then does the new agent confirm itself.
        self.ready = asyncio.Event()

    # -- before the handover -------------------------------------------------------------------

    def owns(self, job: InstallJob) -> bool:
        """Whether the verified image is the agent's own package.

        Raises:
            UpgradeFailed: it is the agent's package, but of another version than offered.
        """
        try:
            fields = control_fields(job.image)
        except NotAPackage:
            return False
        if fields["Package"] != PACKAGE:
            return False
        if fields["Version"] != job.version:
            raise UpgradeFailed(
                UpgradeStatus.VERIFY_FAILED,
                f"the package is {PACKAGE} {fields['Version']}, the offer says {job.version}",
            )
        return True

    def plan(self, job: InstallJob) -> dict[str, Any]:
        """What the journal holds before the handover (the new agent and the watch rely on it)."""
        return {
            "id": uuid.uuid4().hex,
            "version": job.version,
            "previous_version": self.running_version,
            "previous_package": str(
                kept_package(self.settings.installer_dir, self.running_version)
            ),
            "deadline": self._clock() + self.settings.confirm_timeout_s,
            "confirm_timeout_s": self.settings.confirm_timeout_s,
        }

    # -- the installer contract ------------------------------------------------------------------

    async def install(self, job: InstallJob, detail: dict[str, Any], progress: ProgressFn) -> None:
        """Hand the package to root (unless this process already is the new version)."""
        plan = detail["self_update"]
        if self.running_version == plan["version"]:
            return  # restarted into it before the old process heard the answer
        verdict = self._verdict(plan)
        if verdict.get("state") in _ROLLED_BACK:
            raise UpgradeFailed(UpgradeStatus.ROLLED_BACK, str(verdict.get("reason")))
        self._log.info("upgrade.self.handover", version=job.version, id=plan["id"])
        answer = await self._ask("self-install", job, plan["id"], plan["confirm_timeout_s"])
        if answer.exit_code == REFUSED:
            raise UpgradeFailed(UpgradeStatus.UNSUPPORTED, f"self-update refused: {answer.detail}")
        if answer.exit_code != 0:
            raise UpgradeFailed(
                UpgradeStatus.INSTALL_FAILED,
                answer.detail or f"self-install ended with {answer.exit_code}",
            )
        await progress(100)

    async def activate(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """A restart is needed unless this process already is the new version."""
        return bool(self.running_version != detail["self_update"]["version"])

    async def reboot(self, job: InstallJob, detail: dict[str, Any]) -> None:
        """Wait for the restart into the new version (or for root's rollback, if it comes first)."""
        plan = detail["self_update"]
        self._log.info("upgrade.self.awaiting_restart", version=plan["version"])
        while True:
            if self._verdict(plan).get("state") in _ROLLED_BACK:
                return
            await asyncio.sleep(_POLL_S)

    def rebooted(self, detail: dict[str, Any]) -> bool:
        """This process is the expected version, or root has rolled the update back."""
        plan = detail["self_update"]
        if self.running_version == plan["version"]:
            return True
        return self._verdict(plan).get("state") in _ROLLED_BACK

    async def confirm(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """Once READY, the new version asks root to keep it."""
        plan = detail["self_update"]
        verdict = self._verdict(plan)
        if verdict.get("state") in _ROLLED_BACK:
            detail["rollback_reason"] = verdict.get("reason")
            return False
        if verdict.get("state") == "confirmed":
            return True  # confirmed before a crash: nothing to ask again
        if self.running_version != plan["version"]:
            detail["rollback_reason"] = (
                f"running {self.running_version} after the restart, not {plan['version']}"
            )
            return False
        await self.ready.wait()
        self._forget_answer(plan)
        answer = await self._ask("self-confirm", job, uuid.uuid4().hex, None)
        if answer.exit_code == 0:
            self._log.info("upgrade.self.confirmed", version=plan["version"])
            return True
        detail["rollback_reason"] = f"confirmation refused: {answer.detail}"
        return False

    async def rollback(self, job: InstallJob, detail: dict[str, Any]) -> bool:
        """Root reinstalls the previous package (at the deadline at the latest): wait for it."""
        plan = detail["self_update"]
        give_up = plan["deadline"] + self.settings.handover_timeout_s
        while (verdict := self._verdict(plan)).get("state") not in _ROLLED_BACK:
            if self._clock() > give_up:
                raise UpgradeFailed(
                    UpgradeStatus.INSTALL_FAILED, "the privileged installer never rolled back"
                )
            await asyncio.sleep(_POLL_S)
        detail["rollback_reason"] = verdict.get("reason")
        if verdict["state"] != "rolled_back":
            raise UpgradeFailed(UpgradeStatus.INSTALL_FAILED, str(verdict.get("reason")))
        return False

    async def _ask(
        self, phase: str, job: InstallJob, ident: str, confirm_timeout_s: float | None
    ) -> Answer:
        """Ask root and wait for the answer (a restart may end the wait at any time)."""
        base = Path(self.settings.privileged_dir)
        refused = await asyncio.to_thread(
            submit,
            phase,
            job.image,
            job.version,
            base=base,
            ident=ident,
            confirm_timeout_s=confirm_timeout_s,
        )
        if refused is not None:
            return refused
        deadline = time.monotonic() + self.settings.handover_timeout_s
        while (answer := collect(base, ident)) is None:
            if time.monotonic() > deadline:
                return withdraw(base, ident, self.settings.handover_timeout_s)
            await asyncio.sleep(0.2)
        return answer

    # -- root's verdict ---------------------------------------------------------------------------

    def _verdict(self, plan: dict[str, Any]) -> dict[str, Any]:
        """Root's outcome for this handover ({} while root has written none)."""
        try:
            data = json.loads(status_path(self.settings.privileged_dir, plan["id"]).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) and data.get("id") == plan["id"] else {}

    def _forget_answer(self, plan: dict[str, Any]) -> None:
        """The install answer the replaced process never read."""
        with contextlib.suppress(OSError):
            (Path(self.settings.privileged_dir) / RESULTS / f"{plan['id']}.json").unlink()


class OwnPackagesOnly:
    """The installer when none is configured besides the self-update: refuses other packages."""

    async def install(self, job: InstallJob, detail: dict[str, Any], progress: ProgressFn) -> None:
        """Refuse: only the agent's own package is installed on this device."""
        raise UpgradeFailed(
            UpgradeStatus.UNSUPPORTED,
            f"not a {PACKAGE} package, and no upgrades.installer for other packages",
        )

    async def activate(self, job: InstallJob, detail: dict[str, Any]) -> bool:  # pragma: no cover
        """Never reached (install refuses)."""
        return False

    async def reboot(self, job: InstallJob, detail: dict[str, Any]) -> None:  # pragma: no cover
        """Never reached (install refuses)."""

    def rebooted(self, detail: dict[str, Any]) -> bool:  # pragma: no cover
        """Never reached (install refuses)."""
        return True

    async def confirm(self, job: InstallJob, detail: dict[str, Any]) -> bool:  # pragma: no cover
        """Never reached (install refuses)."""
        return True

    async def rollback(self, job: InstallJob, detail: dict[str, Any]) -> bool:  # pragma: no cover
        """Never reached (install refuses)."""
        return False

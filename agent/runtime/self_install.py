"""Root's side of the agent updating itself: install the new package, watch, reinstall the old.

The sandboxed agent hands a verified device-agent ``.deb`` over with a ``self-install`` request
(see :mod:`agent.runtime.privileged`). Root reads the package's control fields itself, keeps a
root-only copy of it, writes its own record (new and previous version, the previous package's
path and SHA-256, the confirmation deadline) and a marker file, and runs ``dpkg --install``.
With systemd, the package's postinst restarts the service into the new version; without it,
whoever runs the agent restarts it.

The same process then watches (:func:`watch`): it keeps answering requests until the new agent,
once READY, confirms with ``self-confirm`` naming the version dpkg says is installed, or the
deadline passes, and then reinstalls the previous package and records why. The agent reads the
outcome from ``install-results/self-update-<id>.json``. The record and the kept packages live in
a directory only root can write: the agent's state directory is the agent's, and what root
reinstalls must not be something the agent could have swapped. The marker
(``self-update.pending``) is what the path unit watches, so after a power cut the watch resumes
at boot and the deadline still holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.runtime.debs import NotAPackage, control_fields
from agent.runtime.files import write_atomically
from agent.runtime.privileged import REFUSED, RESULTS, Answer, sha256_of

PACKAGE = "device-agent"
# Root's own directory (not the agent's state directory, which the agent could rearrange).
INSTALLER_DIR = Path("/var/lib/device-agent-installer")
RECORD = "self-update.json"
MARKER = "self-update.pending"
# Exit status of a self-install whose dpkg run failed (the previous package is back).
INSTALL_FAILED = 10
_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


def kept_package(installer_dir: Path, version: str) -> Path:
    """Where root keeps the package of one installed version (the rollback target)."""
    return installer_dir / "packages" / f"{PACKAGE}_{version}.deb"


def status_path(base: Path, ident: str) -> Path:
    """Where the agent reads the outcome of handover ``ident``."""
    return base / RESULTS / f"self-update-{ident}.json"


class PackageTool(Protocol):
    """What root needs of dpkg (tests give a stand-in)."""

    def install(self, deb: Path) -> tuple[int, str]:
        """Install ``deb``; (exit status, the output's tail)."""

    def installed_version(self) -> str | None:
        """The installed version of the agent's package (None: not installed)."""


@dataclass(frozen=True)
class Dpkg:
    """dpkg as root runs it: on this system, or on a scratch root (``--root``, for tests)."""

    root: Path | None = None
    timeout_s: float = 1800.0

    def _root_args(self) -> list[str]:
        return [] if self.root is None else [f"--root={self.root}"]

    def install(self, deb: Path) -> tuple[int, str]:
        """``dpkg --install`` without questions (an edited conffile is kept); (status, tail)."""
        argv = ["dpkg", *self._root_args(), "--force-confdef", "--force-confold"]
        if self.root is not None:
            argv.append("--force-script-chrootless")
        try:
            done = subprocess.run(
                [*argv, "--install", str(deb)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=_ENV,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return 124, f"dpkg did not finish within {self.timeout_s} s"
        except OSError as exc:
            return 127, f"cannot run dpkg: {exc.strerror}"
        return done.returncode, (done.stdout + done.stderr)[-400:].strip()

    def installed_version(self) -> str | None:
        """The installed version of the agent's package, None when it is not installed."""
        try:
            done = subprocess.run(
                ["dpkg-query", *self._root_args(), "-W", "-f=${Status}\t${Version}", PACKAGE],
                capture_output=True,
                text=True,
                env=_ENV,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        status, _, version = done.stdout.partition("\t")
        if done.returncode != 0 or not status.endswith(" installed"):
            return None
        return version.strip() or None


@dataclass
class SelfInstaller:
    """The built-in ``self-install`` and ``self-confirm`` phases and the watch over them."""

    base: Path  # the agent's state directory (requests, answers, its verified images)
    installer_dir: Path  # root's own: the record, the marker and the kept packages
    dpkg: PackageTool
    clock: Callable[[], float] = time.time

    # -- the record --------------------------------------------------------------------------

    def record(self) -> dict[str, Any] | None:
        """Root's record of the last self-install (None: there never was one)."""
        try:
            data = json.loads((self.installer_dir / RECORD).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def pending(self) -> bool:
        """Whether a self-install waits for its confirmation."""
        record = self.record()
        return record is not None and record.get("state") == "pending"

    def _save(self, record: dict[str, Any]) -> None:
        self.installer_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(self.installer_dir / RECORD, json.dumps(record).encode(), mode=0o600)
        marker = self.installer_dir / MARKER
        if record["state"] == "pending":
            marker.touch(mode=0o600)
        else:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()
        # The agent's copy of the outcome, owned like the answers (by the agent's user).
        results = self.base / RESULTS
        owner = results.stat()
        shown = {k: record[k] for k in ("id", "state", "version", "previous_version", "reason")}
        write_atomically(
            status_path(self.base, record["id"]),
            json.dumps(shown).encode(),
            owner=(owner.st_uid, owner.st_gid),
        )

    # -- the phases ----------------------------------------------------------------------------

    def install(self, body: dict[str, Any]) -> Answer:
        """``self-install``: check, keep a copy, record, run dpkg (the old one back on failure)."""
        ident, version, image = body["id"], body["version"], Path(body["image"])
        record = self.record()
        if record is not None and record.get("id") == ident:
            # Asked again (the agent restarted mid-handover): the same answer, nothing rerun.
            done = record["state"] in ("pending", "confirmed")
            return Answer(0 if done else INSTALL_FAILED, str(record.get("reason", "")))
        refusal, installed = self._refusal(record, body)
        if refusal:
            return Answer(REFUSED, refusal)
        previous = kept_package(self.installer_dir, installed)
        timeout_s = body["confirm_timeout_s"]
        kept = kept_package(self.installer_dir, version)
        _copy_private(image, kept)
        if sha256_of(kept) != body["sha256"]:
            kept.unlink()
            return Answer(REFUSED, "image changed while it was copied")
        record = {
            "id": ident,
            "state": "pending",
            "version": version,
            "previous_version": installed,
            "previous_package": str(previous),
            "previous_sha256": sha256_of(previous),
            "confirm_timeout_s": timeout_s,
            "deadline": None,
            "reason": "",
        }
        self._save(record)
        code, output = self.dpkg.install(kept)
        if code != 0:
            reason = f"dpkg could not install {PACKAGE} {version} (exit {code}): {output[-200:]}"
            self._restore(record, reason)
            return Answer(INSTALL_FAILED, record["reason"])
        # Counted from the end of dpkg's run: the new agent has this long to confirm.
        record["deadline"] = self.clock() + timeout_s
        self._save(record)
        return Answer(0, f"installed {PACKAGE} {version}; it must confirm within {timeout_s} s")

    def _refusal(  # noqa: PLR0911 - one refusal per check
        self, record: dict[str, Any] | None, body: dict[str, Any]
    ) -> tuple[str, str]:
        """Why a self-install cannot go ahead ("" when it can), and the installed version."""
        if record is not None and record.get("state") == "pending":
            return f"self-update {record['id']} still waits for its confirmation", ""
        timeout_s = body.get("confirm_timeout_s")
        if not isinstance(timeout_s, int | float) or not 1 <= timeout_s <= 3600:
            return "confirm_timeout_s missing or not within 1..3600", ""
        try:
            fields = control_fields(Path(body["image"]))
        except NotAPackage as exc:
            return f"not a {PACKAGE} package: {exc}", ""
        if fields["Package"] != PACKAGE or fields["Version"] != body["version"]:
            found = f"{fields['Package']} {fields['Version']}"
            return f"package is {found}, not {PACKAGE} {body['version']}", ""
        installed = self.dpkg.installed_version()
        if installed is None:
            return f"{PACKAGE} is not installed by dpkg: nothing to roll back to", ""
        if installed == body["version"]:
            return f"{PACKAGE} {installed} is installed already", installed
        previous = kept_package(self.installer_dir, installed)
        if not _is_version(previous, installed):
            return (
                f"no copy of the installed {PACKAGE} {installed} to roll back to: keep it as"
                f" {previous} (docs/upgrades.md)",
                installed,
            )
        return "", installed

    def confirm(self, body: dict[str, Any]) -> Answer:
        """``self-confirm``: the new agent is READY and says so (dpkg must agree on its version)."""
        record = self.record()
        if record is None or record.get("state") != "pending":
            state = "none" if record is None else record.get("state")
            return Answer(REFUSED, f"no self-update waits for a confirmation (last: {state})")
        installed = self.dpkg.installed_version()
        if body["version"] != record["version"] or installed != record["version"]:
            return Answer(
                REFUSED,
                f"confirmation for {body['version']}, but {record['version']} was installed"
                f" and dpkg says {installed}",
            )
        record["state"] = "confirmed"
        record["reason"] = f"{PACKAGE} {record['version']} confirmed"
        self._save(record)
        kept = kept_package(self.installer_dir, record["previous_version"])
        if kept != kept_package(self.installer_dir, record["version"]):
            # Only the running version's package is kept: it is the next rollback target.
            with contextlib.suppress(FileNotFoundError):
                kept.unlink()
        return Answer(0, record["reason"])

    def keep(self, deb: Path) -> str:
        """Keep ``deb`` as the installed version's package (the first rollback target).

        Returns what was done, or raises ValueError saying why not.
        """
        try:
            fields = control_fields(deb)
        except NotAPackage as exc:
            raise ValueError(f"{deb}: {exc}") from exc
        installed = self.dpkg.installed_version()
        if fields["Package"] != PACKAGE or fields["Version"] != installed:
            found = f"{fields['Package']} {fields['Version']}"
            raise ValueError(f"{deb} is {found}; the installed {PACKAGE} is {installed}")
        target = kept_package(self.installer_dir, installed)
        _copy_private(deb, target)
        return f"kept {target}"

    # -- the watch ----------------------------------------------------------------------------

    def expire(self) -> bool:
        """Reinstall the previous package if the pending update's deadline passed; whether done."""
        record = self.record()
        if record is None or record.get("state") != "pending":
            return False
        deadline = record.get("deadline")
        if deadline is None:
            # Interrupted during dpkg's run (a power cut): the deadline starts now.
            record["deadline"] = self.clock() + record["confirm_timeout_s"]
            self._save(record)
            return False
        if self.clock() < deadline:
            return False
        self._restore(
            record,
            f"{PACKAGE} {record['version']} did not reach READY and confirm within"
            f" {record['confirm_timeout_s']} s",
        )
        return True

    def _restore(self, record: dict[str, Any], why: str) -> None:
        previous = Path(record["previous_package"])
        if not previous.is_file() or sha256_of(previous) != record["previous_sha256"]:
            record["state"] = "rollback_failed"
            record["reason"] = f"{why}; the kept {record['previous_version']} package is gone"
        else:
            code, output = self.dpkg.install(previous)
            if code == 0:
                record["state"] = "rolled_back"
                record["reason"] = f"{why}; reinstalled {record['previous_version']}"
            else:
                record["state"] = "rollback_failed"
                record["reason"] = (
                    f"{why}; reinstalling {record['previous_version']} failed (exit {code}):"
                    f" {output[-200:]}"
                )
        self._save(record)


def _is_version(deb: Path, version: str) -> bool:
    try:
        return control_fields(deb)["Version"] == version
    except NotAPackage:
        return False


def _copy_private(source: Path, target: Path) -> None:
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, source.open("rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)


def watch(
    installer: SelfInstaller,
    serve: Callable[[], object],
    *,
    poll_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Keep answering requests while a self-update is pending; roll back at its deadline."""
    while installer.pending():
        serve()
        if installer.expire():
            return
        if installer.pending():
            sleep(poll_s)

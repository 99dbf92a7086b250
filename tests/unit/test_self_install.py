"""Root's side of the self-update: checks, the record, the watch and the rollback (dpkg faked)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from agent.runtime.debs import NotAPackage, control_fields
from agent.runtime.privileged import REFUSED, RESULTS
from agent.runtime.self_install import (
    INSTALL_FAILED,
    MARKER,
    SelfInstaller,
    kept_package,
    status_path,
    watch,
)
from tests.support.debian import make_deb


class FakeDpkg:
    """What dpkg would do: remembers the installed version; may fail for given versions."""

    def __init__(self, installed: str | None) -> None:
        self.version = installed
        self.failing: set[str] = set()
        self.installs: list[str] = []

    def install(self, deb: Path) -> tuple[int, str]:
        version = control_fields(deb)["Version"]
        self.installs.append(version)
        if version in self.failing:
            return 1, f"dpkg: error processing package device-agent ({version})"
        self.version = version
        return 0, ""

    def installed_version(self) -> str | None:
        return self.version


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> tuple[SelfInstaller, FakeDpkg, Clock]:
    """An installer over a fake dpkg with 1.0 installed, and its clock."""
    base = tmp_path / "state"
    (base / RESULTS).mkdir(parents=True)
    dpkg, clock = FakeDpkg("1.0"), Clock()
    installer = SelfInstaller(
        base=base,
        installer_dir=tmp_path / "root-only",
        dpkg=dpkg,
        clock=clock,
    )
    return installer, dpkg, clock


def _request(installer: SelfInstaller, version: str, ident: str = "a" * 32) -> dict[str, object]:
    image = make_deb(installer.base / f"image-{version}.deb", "device-agent", version)
    return {
        "id": ident,
        "phase": "self-install",
        "image": str(image),
        "sha256": hashlib.sha256(image.read_bytes()).hexdigest(),
        "version": version,
        "confirm_timeout_s": 60,
    }


def _keep_installed(installer: SelfInstaller, tmp_path: Path) -> None:
    assert installer.keep(make_deb(tmp_path / "old.deb", "device-agent", "1.0")).startswith("kept")


def test_the_control_fields_of_a_package_are_read_and_other_files_refused(tmp_path: Path) -> None:
    """Package and Version come from control.tar; a file that is no package is refused."""
    deb = make_deb(tmp_path / "x.deb", "device-agent", "2.0")
    assert control_fields(deb)["Version"] == "2.0"
    (tmp_path / "junk").write_bytes(b"not a package")
    with pytest.raises(NotAPackage, match="not an ar archive"):
        control_fields(tmp_path / "junk")


def test_without_a_kept_copy_of_the_installed_version_nothing_is_installed(
    setup: tuple[SelfInstaller, FakeDpkg, Clock],
) -> None:
    """No rollback target, no install: refused with where to keep one."""
    installer, dpkg, _ = setup
    answer = installer.install(_request(installer, "2.0"))
    assert answer.exit_code == REFUSED
    assert "no copy of the installed device-agent 1.0 to roll back to" in answer.detail
    assert dpkg.installs == []


def test_another_package_or_another_version_is_refused(
    setup: tuple[SelfInstaller, FakeDpkg, Clock], tmp_path: Path
) -> None:
    """Root reads the package itself: name and version must be the offered ones."""
    installer, dpkg, _ = setup
    _keep_installed(installer, tmp_path)
    body = _request(installer, "2.0")
    make_deb(Path(str(body["image"])), "something-else", "2.0")
    assert "not device-agent 2.0" in installer.install(body).detail
    body = _request(installer, "2.0")
    body["version"] = "3.0"
    assert "package is device-agent 2.0, not device-agent 3.0" in installer.install(body).detail
    assert dpkg.installs == []


def test_install_records_before_dpkg_then_the_confirmation_keeps_the_new_version(
    setup: tuple[SelfInstaller, FakeDpkg, Clock], tmp_path: Path
) -> None:
    """The record (previous package, deadline) and marker exist; confirming ends the watch."""
    installer, dpkg, clock = setup
    _keep_installed(installer, tmp_path)
    body = _request(installer, "2.0")
    answer = installer.install(body)
    assert answer.exit_code == 0, answer.detail
    assert dpkg.installs == ["2.0"]
    record = installer.record()
    assert record is not None
    assert record["state"] == "pending"
    assert record["previous_version"] == "1.0"
    assert record["previous_package"] == str(kept_package(installer.installer_dir, "1.0"))
    assert record["deadline"] == clock.now + 60
    assert (installer.installer_dir / MARKER).exists()
    # Asked again with the same handover id (the agent restarted): same answer, no second run.
    assert installer.install(body).exit_code == 0
    assert dpkg.installs == ["2.0"]

    confirm = {**body, "id": "b" * 32, "phase": "self-confirm"}
    assert installer.confirm(confirm).exit_code == 0
    assert not installer.pending()
    assert not (installer.installer_dir / MARKER).exists()
    verdict = json.loads(status_path(installer.base, "a" * 32).read_text())
    assert verdict["state"] == "confirmed"
    assert sorted(p.name for p in (installer.installer_dir / "packages").iterdir()) == [
        "device-agent_2.0.deb"
    ]
    assert installer.expire() is False  # nothing pending: nothing rolled back later


def test_a_debian_version_with_an_epoch_and_a_tilde_is_installed_and_kept(
    setup: tuple[SelfInstaller, FakeDpkg, Clock], tmp_path: Path
) -> None:
    """An epoch and a "~" are installed, confirmed and kept under the version's own name."""
    installer, dpkg, _ = setup
    _keep_installed(installer, tmp_path)
    body = _request(installer, "1:2.0~rc1")
    assert installer.install(body).exit_code == 0
    assert dpkg.installs == ["1:2.0~rc1"]
    assert installer.confirm({**body, "id": "b" * 32, "phase": "self-confirm"}).exit_code == 0
    kept = kept_package(installer.installer_dir, "1:2.0~rc1")
    assert sorted((installer.installer_dir / "packages").iterdir()) == [kept]
    assert control_fields(kept)["Version"] == "1:2.0~rc1"


def test_no_confirmation_by_the_deadline_reinstalls_the_previous_package(
    setup: tuple[SelfInstaller, FakeDpkg, Clock], tmp_path: Path
) -> None:
    """The watch reinstalls the kept package at the deadline and says why."""
    installer, dpkg, clock = setup
    _keep_installed(installer, tmp_path)
    assert installer.install(_request(installer, "2.0")).exit_code == 0
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += 30

    watch(installer, lambda: None, poll_s=1.0, sleep=sleep)
    assert len(sleeps) == 2  # 1030, 1060: the deadline (1060) has passed on the third look
    assert dpkg.installs == ["2.0", "1.0"]
    assert dpkg.version == "1.0"
    verdict = json.loads(status_path(installer.base, "a" * 32).read_text())
    assert verdict["state"] == "rolled_back"
    assert verdict["reason"] == (
        "device-agent 2.0 did not reach READY and confirm within 60 s; reinstalled 1.0"
    )
    assert not (installer.installer_dir / MARKER).exists()
    # A late confirmation changes nothing.
    late = {**_request(installer, "2.0", "c" * 32), "phase": "self-confirm"}
    assert installer.confirm(late).exit_code == REFUSED


def test_a_failed_dpkg_run_puts_the_previous_package_back_at_once(
    setup: tuple[SelfInstaller, FakeDpkg, Clock], tmp_path: Path
) -> None:
    """A failed dpkg run on the new package: the old one is reinstalled, the answer says so."""
    installer, dpkg, _ = setup
    _keep_installed(installer, tmp_path)
    dpkg.failing.add("2.0")
    answer = installer.install(_request(installer, "2.0"))
    assert answer.exit_code == INSTALL_FAILED
    assert "dpkg could not install device-agent 2.0 (exit 1)" in answer.detail
    assert "reinstalled 1.0" in answer.detail
    assert dpkg.installs == ["2.0", "1.0"]
    assert not installer.pending()


def test_a_kept_package_changed_behind_roots_back_is_not_reinstalled(
    setup: tuple[SelfInstaller, FakeDpkg, Clock], tmp_path: Path
) -> None:
    """The kept package must still hash as recorded before root installs it."""
    installer, dpkg, clock = setup
    _keep_installed(installer, tmp_path)
    assert installer.install(_request(installer, "2.0")).exit_code == 0
    kept = kept_package(installer.installer_dir, "1.0")
    kept.write_bytes(kept.read_bytes() + b"tampered")
    clock.now += 61
    assert installer.expire() is True
    record = installer.record()
    assert record is not None
    assert record["state"] == "rollback_failed"
    assert "the kept 1.0 package is gone" in str(record["reason"])
    assert dpkg.installs == ["2.0"]

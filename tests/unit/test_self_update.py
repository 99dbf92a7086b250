"""The agent's side of the self-update: what it recognises, journals and makes of root's verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config.upgrades import SelfUpdateSettings, UpgradeSettings
from agent.core.errors import UpgradeFailed
from agent.core.model import UpgradeStatus
from agent.runtime.logging import get_logger
from agent.runtime.privileged import RESULTS
from agent.runtime.self_install import status_path
from agent.upgrade.installers.base import InstallJob
from agent.upgrade.installers.self_update import OwnPackagesOnly, SelfUpdater
from tests.support.debian import make_deb


def _updater(tmp_path: Path) -> SelfUpdater:
    settings = SelfUpdateSettings(
        enabled=True,
        privileged_dir=tmp_path,
        installer_dir=tmp_path / "root-only",
        confirm_timeout_s=120,
    )
    return SelfUpdater(settings, running_version="1.0", log=get_logger(), clock=lambda: 5000.0)


def _job(image: Path, version: str = "2.0") -> InstallJob:
    return InstallJob(
        device_id="dev",
        target="software",
        version=version,
        previous_version="1.0",
        image=image,
        sha256="0" * 64,
    )


def test_only_the_agents_own_package_of_the_offered_version_is_taken(tmp_path: Path) -> None:
    """Other files and packages go to the configured installer; a version mismatch fails."""
    updater = _updater(tmp_path)
    (tmp_path / "fw.bin").write_bytes(b"firmware")
    assert updater.owns(_job(tmp_path / "fw.bin")) is False
    assert updater.owns(_job(make_deb(tmp_path / "o.deb", "other-package", "2.0"))) is False
    own = make_deb(tmp_path / "a.deb", "device-agent", "2.0")
    assert updater.owns(_job(own)) is True
    with pytest.raises(UpgradeFailed) as failed:
        updater.owns(_job(own, version="3.0"))
    assert failed.value.status == UpgradeStatus.VERIFY_FAILED
    assert "the package is device-agent 2.0, the offer says 3.0" in failed.value.reason


def test_the_plan_names_version_deadline_and_previous_package(tmp_path: Path) -> None:
    """What the journal holds before the handover."""
    plan = _updater(tmp_path).plan(_job(make_deb(tmp_path / "a.deb", "device-agent", "2.0")))
    assert plan["version"] == "2.0"
    assert plan["previous_version"] == "1.0"
    assert plan["previous_package"] == str(tmp_path / "root-only/packages/device-agent_1.0.deb")
    assert plan["deadline"] == 5000.0 + 120
    assert len(plan["id"]) == 32


async def test_roots_rollback_verdict_becomes_the_reason_and_nothing_is_asked(
    tmp_path: Path,
) -> None:
    """The old agent, back after root's rollback, reports root's reason and asks nothing."""
    updater = _updater(tmp_path)
    image = make_deb(tmp_path / "a.deb", "device-agent", "2.0")
    detail: dict[str, Any] = {"self_update": updater.plan(_job(image))}
    ident = detail["self_update"]["id"]
    (tmp_path / RESULTS).mkdir()
    status_path(tmp_path, ident).write_text(
        json.dumps({"id": ident, "state": "rolled_back", "reason": "2.0 never confirmed"})
    )
    assert updater.rebooted(detail) is True
    assert await updater.confirm(_job(image), detail) is False
    assert detail["rollback_reason"] == "2.0 never confirmed"
    assert await updater.rollback(_job(image), detail) is False
    with pytest.raises(UpgradeFailed) as failed:
        await updater.install(_job(image), detail, _no_progress)
    assert failed.value.status == UpgradeStatus.ROLLED_BACK
    assert not (tmp_path / "install-requests").exists()


async def test_the_restarted_new_version_hands_nothing_over_again(tmp_path: Path) -> None:
    """A process that already is the expected version needs no install and no restart."""
    settings = SelfUpdateSettings(enabled=True, privileged_dir=tmp_path)
    updater = SelfUpdater(settings, running_version="2.0", log=get_logger())
    image = make_deb(tmp_path / "a.deb", "device-agent", "2.0")
    detail = {"self_update": {"id": "a" * 32, "version": "2.0"}}
    await updater.install(_job(image), detail, _no_progress)
    assert await updater.activate(_job(image), detail) is False
    assert updater.rebooted(detail) is True
    assert not (tmp_path / "install-requests").exists()


async def test_without_another_installer_other_packages_are_refused(tmp_path: Path) -> None:
    """`installer` may be left out when the only packages are the agent's own."""
    settings = UpgradeSettings(enabled=True, self_update=SelfUpdateSettings(enabled=True))
    assert settings.installer is None
    with pytest.raises(ValueError, match="unless the only packages are the agent's own"):
        UpgradeSettings(enabled=True)
    # Root takes images only from the directory it serves: the downloads must be there.
    with pytest.raises(ValueError, match=r"state_dir \(/srv/pkgs\) must lie inside"):
        UpgradeSettings(
            enabled=True, state_dir=Path("/srv/pkgs"), self_update=SelfUpdateSettings(enabled=True)
        )
    with pytest.raises(UpgradeFailed) as failed:
        await OwnPackagesOnly().install(_job(tmp_path / "fw.bin"), {}, _no_progress)
    assert failed.value.status == UpgradeStatus.UNSUPPORTED


async def _no_progress(percent: int) -> None:
    return None

"""The shipped systemd unit: valid, hardened, and wired to the daemon's notify protocol."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "device-agent.service"
SECURITY_GOAL = 2.0

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_uses_notify_watchdog_and_restarts_for_ever() -> None:
    """Type=notify with a watchdog, always restarted, and no start limit that can give up."""
    settings = _settings()

    assert settings["Type"] == ["notify"]
    assert settings["WatchdogSec"]
    assert settings["Restart"] == ["always"]
    assert settings["StartLimitIntervalSec"] == ["0"]
    assert settings["ExecStart"][0].split()[1:3] == ["run", "--config"]


def test_unit_runs_as_a_dedicated_user_with_its_own_directories() -> None:
    """A dedicated user, a state directory and a configuration directory."""
    settings = _settings()

    assert settings["User"] == ["device-agent"]
    assert settings["StateDirectory"] == ["device-agent"]
    assert settings["ConfigurationDirectory"] == ["device-agent"]
    assert "device-agent" in (REPO / "systemd" / "device-agent.sysusers").read_text()


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (ExecStart pointed at this checkout's agent)."""
    unit = tmp_path / "device-agent.service"
    agent = Path(sys.executable).with_name("device-agent")
    text = UNIT.read_text().replace("/usr/bin/device-agent", str(agent))
    unit.write_text(text)

    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    problems = [line for line in result.stderr.splitlines() if "device-agent.service" in line]
    assert result.returncode == 0, result.stderr
    assert problems == []


@needs_systemd_analyze
def test_privileged_installer_units_pass_verify(tmp_path: Path) -> None:
    """The installer's path and service units are accepted by `systemd-analyze verify`."""
    agent = Path(sys.executable).with_name("device-agent")
    units = []
    for name in ("device-agent-installer.service", "device-agent-installer.path"):
        text = (REPO / "systemd" / name).read_text().replace("/usr/bin/device-agent", str(agent))
        (tmp_path / name).write_text(text)
        units.append(str(tmp_path / name))

    result = subprocess.run(
        ["systemd-analyze", "verify", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "device-agent" in line] == []


@needs_systemd_analyze
def test_unit_exposure_score_meets_the_goal() -> None:
    """`systemd-analyze security --offline=true` scores the unit at 2.0 or lower."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)

    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= SECURITY_GOAL

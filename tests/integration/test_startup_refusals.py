"""What `check-config` and `run` refuse or warn about before the daemon serves anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.sim.mosquitto import Mosquitto
from tests.support.agents import REPO, AgentProcess, agent_config

EXIT_CONFIG = 2


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


@pytest.mark.parametrize(
    ("upgrades", "named"),
    [
        ({"enabled": True}, "upgrades.installer is required"),
        ({"enabled": True, "installer": "simulated"}, "rehearsal_only"),
    ],
    ids=["no-installer", "simulated-without-rehearsal-flag"],
)
def test_upgrades_without_a_real_installer_are_refused_by_check_config_and_run(
    tmp_path: Path, upgrades: dict[str, Any], named: str
) -> None:
    """Enabled upgrades need a named installer; `simulated` needs the rehearsal-only flag."""
    config = agent_config(
        tmp_path, 1883, upgrades={"state_dir": str(tmp_path / "upgrades"), **upgrades}
    )
    for args in (["check-config", str(config)], ["run", "--config", str(config)]):
        done = _cli(*args)
        assert done.returncode == EXIT_CONFIG, (args, done.stdout, done.stderr)
        assert named in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_the_simulated_installer_is_accepted_as_a_rehearsal(tmp_path: Path) -> None:
    """`simulated` with rehearsal_only = true passes check-config."""
    config = agent_config(
        tmp_path,
        1883,
        upgrades={
            "enabled": True,
            "state_dir": str(tmp_path / "upgrades"),
            "installer": "simulated",
            "simulated": {"rehearsal_only": True},
        },
    )
    done = _cli("check-config", str(config))
    assert done.returncode == 0, done.stderr


@pytest.mark.broker
def test_run_warns_about_secret_and_config_files_others_may_read_or_change(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Run warns about a readable secret and a writable config; check-config refuses the secret."""
    config = agent_config(tmp_path, broker.port)
    secret = tmp_path / "secret"
    secret.chmod(0o644)
    config.chmod(0o666)
    done = _cli("check-config", str(config))
    assert done.returncode == 2, done.stderr
    assert "device.secret_file" in done.stderr
    assert "readable or writable by others (mode 0644" in done.stderr
    assert "writable by group or others" in done.stderr
    agent = AgentProcess(config, tmp_path)
    agent.start()
    assert agent.stop() == 0
    warned = {
        (line["key"], line["problem"].split(" (")[0])
        for line in agent.events("config.file.insecure")
    }
    assert warned == {
        ("device.secret_file", "is readable by others"),
        ("config file", "is writable by group or others"),
    }


@pytest.mark.broker
def test_run_does_not_warn_about_files_kept_private(tmp_path: Path, broker: Mosquitto) -> None:
    """A 0600 secret and a 0644 config give no warning."""
    config = agent_config(tmp_path, broker.port)
    (tmp_path / "secret").chmod(0o600)
    config.chmod(0o644)
    agent = AgentProcess(config, tmp_path)
    agent.start()
    assert agent.stop() == 0
    assert agent.events("config.file.insecure") == []

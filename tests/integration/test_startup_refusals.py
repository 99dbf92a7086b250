"""What `check-config` and `run` refuse or warn about before the daemon serves anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.agents import REPO, agent_config

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

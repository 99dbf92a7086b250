"""The files ``device-agent demo --single-agent`` leaves behind pass ``check-config``.

The demo prints them for the reader to reuse (docs/configuration.md checks them), so its
configuration must be one the service would accept, secret file permissions included.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.app.checks import check_environment, service_problems
from agent.config import load_config
from agent.sim.demo import write_demo_files


def test_the_demo_configuration_passes_the_service_checks(tmp_path: Path) -> None:
    """Written under the common umask 022, the secret is still private to its owner."""
    previous = os.umask(0o022)
    try:
        config_path = write_demo_files(tmp_path, port=1883)
    finally:
        os.umask(previous)
    config = load_config(config_path)
    assert check_environment(config) == []
    assert service_problems(config) == []
    assert (tmp_path / "secret").stat().st_mode & 0o077 == 0

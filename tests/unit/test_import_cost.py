"""The daemon loads what only some runs need (downloads, signatures, the simulator) lazily."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import AgentConfig

# Loaded by the first download or signed package, or by the platform a device speaks: never
# by the daemon's start as such. (ctypes is not among them: the daemon becomes its handlers'
# subreaper through prctl at start.)
LAZY = [
    "httpx",
    "cryptography",
    "pydantic_settings",
    "dotenv",
    "rich",
    "greenlet",
    "dns",
    "idna",
    "agent.sim",
    "agent.profiles.tencent_iothub",
    "agent.profiles.huawei_oceanconnect",
]


def test_starting_the_daemon_imports_none_of_the_lazy_modules() -> None:
    """Importing the daemon's entry point and wiring leaves them unloaded."""
    code = (
        "import json, sys\n"
        "import agent.cli, agent.app.daemon, agent.app.build\n"
        f"print(json.dumps([m for m in {LAZY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []


def test_overrides_apply_to_a_configuration_built_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built from a table (as the simulator does), DEVICE_AGENT_* still wins, tables merged."""
    monkeypatch.setenv("DEVICE_AGENT_MQTT__PORT", "8884")
    monkeypatch.setenv("DEVICE_AGENT_MQTT__TLS__ENABLED", "true")
    device = {"profile": "huawei-iotda", "device_id": "d1", "secret_file": str(tmp_path / "s")}

    config = AgentConfig(device=device, mqtt={"host": "127.0.0.1", "port": 1883})

    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls.enabled) == (
        "127.0.0.1",
        8884,
        True,
    )

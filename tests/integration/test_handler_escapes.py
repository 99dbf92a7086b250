"""Handler descendants that leave the handler's session are stopped all the same."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.sim.mosquitto import Mosquitto
from tests.support.agents import AgentProcess, agent_config, wait_until, write_handler
from tests.support.platform import PlatformClient

pytestmark = pytest.mark.broker

DEVICE = "dev-esc"
# Starts a child that calls setsid (a session, and so a process group, of its own) and sleeps;
# the child keeps the handler's stdout unless DETACH is set. Then exits, or hangs if HANG is set.
ESCAPING_HANDLER = """\
import json, os, subprocess, sys, time
out = subprocess.DEVNULL if os.environ.get("DETACH") else None
child = subprocess.Popen(
    [sys.executable, "-c", "import os, time; os.setsid(); time.sleep(100)"],
    stdout=out, stderr=out, stdin=subprocess.DEVNULL,
)
with open(os.environ["PID_FILE"], "w") as fh:
    fh.write(str(child.pid))
if os.environ.get("HANG"):
    time.sleep(3600)
print(json.dumps({"result_code": 0, "paras": {}}))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except OSError:
        return False


def _agent(tmp_path: Path, port: int, **env: str) -> AgentProcess:
    handler = write_handler(tmp_path / "handlers", "escape", ESCAPING_HANDLER)
    route = {
        "command_name": "ESCAPE",
        "handler": {
            "argv": [str(handler)],
            "timeout_s": 2.0,
            "env": {"PID_FILE": str(tmp_path / "child.pid"), **env},
        },
    }
    config = agent_config(tmp_path, port, device_id=DEVICE, routes=[route])
    return AgentProcess(config, tmp_path)


def _command(tmp_path: Path, agent: AgentProcess, port: int) -> tuple[int, int]:
    """Send one ESCAPE command; returns (result_code, escaped child's pid)."""
    agent.start()
    with PlatformClient(port, DEVICE, client_id=f"platform-{tmp_path.name[-8:]}") as platform:
        platform.send(platform.side.command("esc-1", "ESCAPE", {}))
        platform.wait_for(lambda: "esc-1" in platform.command_answers(), 30, "the answer")
        (answer,) = platform.command_answers()["esc-1"]
    return answer.result_code, int((tmp_path / "child.pid").read_text())


def test_a_setsid_child_holding_the_output_is_stopped_when_the_handler_exits(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The handler exits at once: its answer goes out and its escaped child is stopped."""
    agent = _agent(tmp_path, broker.port)
    code, child = _command(tmp_path, agent, broker.port)
    assert code == 0
    wait_until(lambda: not _alive(child), 10, "the escaped child to be stopped")
    assert agent.stop() == 0


def test_a_setsid_child_is_stopped_at_the_handler_deadline(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The handler hangs: at its deadline it and its detached setsid child are both killed."""
    agent = _agent(tmp_path, broker.port, HANG="1", DETACH="1")
    code, child = _command(tmp_path, agent, broker.port)
    assert code == 2  # timeout
    wait_until(lambda: not _alive(child), 10, "the escaped child to be stopped")
    assert agent.stop() == 0


def test_a_detached_setsid_child_is_stopped_when_the_agent_stops(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Detached on purpose, it may outlive the handler, but not the agent."""
    agent = _agent(tmp_path, broker.port, DETACH="1")
    code, child = _command(tmp_path, agent, broker.port)
    assert code == 0
    assert _alive(child)  # detached on purpose: it outlives the handler
    assert agent.stop() == 0
    wait_until(lambda: not _alive(child), 10, "the left-behind child to be stopped")

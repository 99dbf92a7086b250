"""SIGHUP against a running daemon: new routes and handlers at once, a bad file refused."""

from __future__ import annotations

import signal
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.sim.mosquitto import Mosquitto
from tests.support import toml
from tests.support.agents import AgentProcess, agent_config, write_handler
from tests.support.platform import PlatformClient

pytestmark = pytest.mark.broker

DEVICE = "dev-reload"


def _answer(port: int, request_id: str) -> Any:
    with PlatformClient(port, DEVICE, client_id=f"platform-{request_id}") as platform:
        platform.send(platform.side.command(request_id, "WHO"))
        platform.wait_for(lambda: request_id in platform.command_answers(), 30, "the answer")
        return platform.command_answers()[request_id][0]


def _route(handler: Path) -> list[dict[str, Any]]:
    return [{"command_name": "WHO", "handler": {"argv": [str(handler)]}}]


def test_sighup_reloads_routes_refuses_a_bad_file_and_names_restart_keys(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A new handler serves the next command; a broken file changes nothing; keepalive waits."""
    handlers = tmp_path / "handlers"
    first = write_handler(handlers, "first", 'print(\'{"paras": {"who": "first"}}\')\n')
    second = write_handler(handlers, "second", 'print(\'{"paras": {"who": "second"}}\')\n')
    config = agent_config(tmp_path, broker.port, device_id=DEVICE, routes=_route(first))
    agent = AgentProcess(config, tmp_path)
    agent.start()
    assert _answer(broker.port, "before").paras == {"who": "first"}

    # A new handler for the route, and a broker setting that only a restart can change.
    data = tomllib.loads(config.read_text())
    data["commands"]["routes"] = _route(second)
    data["mqtt"]["keepalive_s"] = 90
    config.write_text(toml.dumps(data) + "\n")
    assert agent.process is not None
    agent.process.send_signal(signal.SIGHUP)
    agent.wait_event("agent.reloaded", 30)
    (restart,) = agent.wait_event("agent.reload.restart_needed", 30)
    assert restart["keys"] == ["mqtt.keepalive_s"]
    assert _answer(broker.port, "after").paras == {"who": "second"}

    # A file that does not validate is refused; the agent keeps serving with the last good one.
    config.write_text(config.read_text() + "\n[commands.nonsense]\nx = 1\n")
    agent.process.send_signal(signal.SIGHUP)
    (refused,) = agent.wait_event("agent.reload.refused", 30)
    assert any("nonsense" in problem for problem in refused["problems"]), refused
    assert _answer(broker.port, "still").paras == {"who": "second"}
    assert agent.stop() == 0
    assert any("RELOADING=1" in n for n in agent.notifications)

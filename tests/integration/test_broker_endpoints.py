"""An agent given several broker endpoints (``mqtt.hosts``) moves on when one is down or dies."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.sim.mosquitto import Mosquitto, free_port
from tests.support.agents import RECORDING_HANDLER, AgentProcess, agent_config, write_handler
from tests.support.platform import PlatformClient

pytestmark = pytest.mark.broker

DEVICE = "dev-endpoints"


def _agent(tmp_path: Path, hosts: list[str]) -> AgentProcess:
    handler = write_handler(tmp_path / "handlers", "record", RECORDING_HANDLER)
    routes = [
        {
            "command_name": "PING",
            "handler": {"argv": [str(handler)], "env": {"RECORD_FILE": str(tmp_path / "runs")}},
        }
    ]
    config = agent_config(tmp_path, 1, device_id=DEVICE, routes=routes, mqtt={"hosts": hosts})
    return AgentProcess(config, tmp_path)


def _ping(port: int, request_id: str, client_id: str) -> int:
    """Send one command through the broker on ``port``; the answer's result code."""
    with PlatformClient(port, DEVICE, client_id=client_id) as platform:
        platform.send(platform.side.command(request_id, "PING"))
        platform.wait_for(lambda: request_id in platform.command_answers(), 30, "the answer")
        return platform.command_answers()[request_id][0].result_code


def test_a_dead_first_endpoint_is_skipped(tmp_path: Path, own_broker: Mosquitto) -> None:
    """Nothing listens on the first endpoint: the agent connects through the second."""
    dead = free_port()
    agent = _agent(tmp_path, [f"127.0.0.1:{dead}", f"127.0.0.1:{own_broker.port}"])
    agent.start()
    try:
        assert _ping(own_broker.port, "r1", "platform-skip") == 0
        failed = agent.events("mqtt.connect.failed")
        assert failed[0]["endpoint"] == f"127.0.0.1:{dead}"
        assert [e["port"] for e in agent.events("mqtt.connected")] == [own_broker.port]
    finally:
        assert agent.stop() == 0
    assert (tmp_path / "runs").read_text().split() == ["r1"]


def test_an_endpoint_that_dies_mid_run_is_left_for_the_next(
    tmp_path: Path, own_broker: Mosquitto
) -> None:
    """Connected to the first endpoint, which is killed: the agent serves through the second."""
    second = Mosquitto(tmp_path / "second")
    second.start()
    agent = _agent(tmp_path, [f"127.0.0.1:{own_broker.port}", f"127.0.0.1:{second.port}"])
    try:
        agent.start()
        assert _ping(own_broker.port, "before", "platform-first") == 0
        own_broker.stop(kill=True)
        agent.wait_event("mqtt.connection.lost", 30)
        connected = agent.wait_event("mqtt.connected", 30, count=2)
        assert [e["port"] for e in connected] == [own_broker.port, second.port]
        assert _ping(second.port, "after", "platform-second") == 0
    finally:
        assert agent.stop() == 0
        second.stop()
    assert (tmp_path / "runs").read_text().split() == ["before", "after"]

"""Upgrade events without ``event_id``, pushed again after a reconnect, are not executed twice."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from agent.sim.mosquitto import Mosquitto
from agent.sim.packages import PackageServer
from tests.support.agents import AgentProcess, agent_config
from tests.support.platform import PlatformClient
from tests.support.upgrades import finals

pytestmark = pytest.mark.broker

DEVICE = "dev-repeat"
PACKAGE = os.urandom(300_000)
PACKAGE_SHA = hashlib.sha256(PACKAGE).hexdigest()


@pytest.mark.slow
def test_an_upgrade_event_pushed_again_after_a_reconnect_runs_once(
    tmp_path: Path, own_broker: Mosquitto
) -> None:
    """The platform's events carry no event_id; its re-push has a new time and a fresh token.

    The agent recognises it by what names the work, so the upgrade runs once (one download,
    one pass through the machine) and the re-push gets the same result again.
    """
    config = agent_config(
        tmp_path,
        own_broker.port,
        device_id=DEVICE,
        upgrades={
            "enabled": True,
            "state_dir": str(tmp_path / "upgrades"),
            "firmware_version": "1.0",
            "allow_http_hosts": ["127.0.0.1"],
            "installer": "simulated",
            "simulated": {"rehearsal_only": True},
        },
    )
    agent = AgentProcess(config, tmp_path)
    agent.start()
    with (
        PlatformClient(own_broker.port, DEVICE, client_id="platform-repeat") as platform,
        PackageServer() as server,
    ):
        server.add("/fw-2.0.bin", PACKAGE)

        def push(event_time: str, token: str) -> None:
            platform.send(
                platform.side.upgrade(
                    version="2.0",
                    url=server.url("/fw-2.0.bin"),
                    sign=PACKAGE_SHA,
                    file_size=len(PACKAGE),
                    access_token=token,
                    object_device_id=DEVICE,
                    event_time=event_time,
                )
            )

        push("20261203T080000Z", "token-1")
        platform.wait_for(lambda: DEVICE in finals(platform), 60, "the result")
        own_broker.restart()
        agent.wait_notification("STATUS=connected", 30, count=2)
        platform.wait_for(platform.client.is_connected, 30, "the platform back")
        push("20261203T081500Z", "token-2")
        platform.wait_for(lambda: len(finals(platform).get(DEVICE, [])) == 2, 60, "the answer")
        results = finals(platform)[DEVICE]
    assert agent.stop() == 0

    assert [(r.result_code, r.progress, r.version) for r in results] == [(0, 100, "2.0")] * 2
    assert len(server.served("/fw-2.0.bin")) == 1
    checks = [e for e in agent.events("upgrade.state") if e.get("state") == "checking"]
    assert len(checks) == 1
    (repeat,) = agent.events("subtask.duplicate")
    assert repeat["kind"] == "upgrade"

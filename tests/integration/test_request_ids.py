"""Request ids outside the usual alphabet are answered on their own response topic."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.sim.mosquitto import Mosquitto
from tests.support.agents import RECORDING_HANDLER, AgentProcess, agent_config, write_handler
from tests.support.platform import PlatformClient

pytestmark = pytest.mark.broker

DEVICE = "dev-rid"
ODD_IDS = [
    "has space",
    "a=b",
    "~tilde",
    'double"quote',
    "ünïcode-請求",
    "x" * 129,
    "y" * 1000,
    "semi;colon,comma",
]


def test_odd_request_ids_each_get_their_answer_on_the_matching_topic(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Space, '=', '~', '"', non-ASCII and long ids: every command runs once and is answered."""
    handler = write_handler(tmp_path / "handlers", "record", RECORDING_HANDLER)
    routes = [
        {
            "command_name": "RECORD",
            "handler": {"argv": [str(handler)], "env": {"RECORD_FILE": str(tmp_path / "runs")}},
        }
    ]
    agent = AgentProcess(
        agent_config(tmp_path, broker.port, device_id=DEVICE, routes=routes), tmp_path
    )
    agent.start()
    with PlatformClient(broker.port, DEVICE, client_id="platform-rid") as platform:
        for rid in ODD_IDS:
            platform.send(platform.side.command(rid, "RECORD", {"rid": rid}))
        platform.wait_for(
            lambda: set(platform.command_answers()) >= set(ODD_IDS), 60, "an answer to every id"
        )
        answers = platform.command_answers()
    assert agent.stop() == 0
    for rid in ODD_IDS:
        (answer,) = answers[rid]
        assert answer.result_code == 0, (rid, answer)
        assert answer.paras["echo"] == {"rid": rid}
    runs = (tmp_path / "runs").read_text().splitlines()
    assert sorted(runs) == sorted(ODD_IDS)
    assert not agent.events("message.rejected")

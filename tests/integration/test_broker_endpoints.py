"""An agent given several broker endpoints (``mqtt.hosts``) moves on when one is down or dies."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.profiles.huawei_iotda import auth as huawei_auth
from agent.sim.mosquitto import Mosquitto, free_port
from agent.sim.nats import nats_binary
from tests.support.agents import (
    DEVICE_SECRET,
    RECORDING_HANDLER,
    AgentProcess,
    agent_config,
    write_handler,
)
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


NATS_CONFIG = """\
server_name: acl
listen: 127.0.0.1:{client_port}
jetstream {{ store_dir: "{store}" }}
authorization {{
  users: [
    {{ user: "{user}", password: "{password}", permissions: {{ subscribe: {{ deny: [{deny}] }} }} }}
    {{ user: platform }}
  ]
}}
mqtt {{ listen: 127.0.0.1:{mqtt_port}, no_auth_user: platform }}
"""


@pytest.mark.nats
@pytest.mark.skipif(
    nats_binary() is None, reason="nats-server is not installed (apt-get install nats-server)"
)
def test_a_refused_subscription_is_retried_until_accepted(tmp_path: Path) -> None:
    """A broker that refuses a filter (a busy cluster, a policy) is asked again while connected.

    NATS answers SUBACK 0x80 for a subject the user may not subscribe to; the permission is
    lifted by a configuration reload. The agent serves meanwhile; once the broker accepts,
    messages on that filter arrive.
    """
    mqtt_port, client_port = free_port(), free_port()
    conf = tmp_path / "nats.conf"
    # The device's password is an HMAC of its secret keyed by the hour the session began:
    # keep clear of an hour's end so the password set up here is the one the agent sends.
    now = datetime.now(UTC)
    if now.minute == 59 and now.second > 50:
        time.sleep(61 - now.second)
    stamp = huawei_auth.timestamp(datetime.now(UTC))

    def configure(deny: str) -> None:
        conf.write_text(
            NATS_CONFIG.format(
                client_port=client_port,
                store=tmp_path / "js",
                user=DEVICE,
                password=huawei_auth.password(DEVICE_SECRET, stamp),
                deny=deny,
                mqtt_port=mqtt_port,
            )
        )

    configure('"custom.>"')
    nats = subprocess.Popen(
        [str(nats_binary()), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = agent_config(
        tmp_path, mqtt_port, device_id=DEVICE, messages={"user_topics": ["custom/{device_id}/down"]}
    )
    agent = AgentProcess(config, tmp_path)
    try:
        agent.start(timeout=60)
        refused = agent.wait_event("mqtt.subscribe.refused", 30)
        assert refused[0]["topic_filter"] == f"custom/{DEVICE}/down"
        configure('"nothing.>"')
        nats.send_signal(signal.SIGHUP)
        agent.wait_event("mqtt.subscribe.accepted", 60)
        with PlatformClient(mqtt_port, DEVICE, client_id="platform-acl") as platform:
            topic = f"custom/{DEVICE}/down"
            platform.send(platform.side.message(b"now allowed", raw=True, topic=topic))
            agent.wait_event("subtask.finished", 30)
        assert len(agent.events("mqtt.connected")) == 1  # retried on the same connection
    finally:
        assert agent.stop() == 0
        nats.terminate()
        nats.wait(30)
    spool = tmp_path / "spool"
    assert [p.read_bytes() for p in spool.iterdir() if p.suffix != ".json"] == [b"now allowed"]

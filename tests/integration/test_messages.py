"""Huawei IoTDA down-link messages through a real Mosquitto into the spool directory."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from agent.sim.mosquitto import Mosquitto
from tests.support.agents import AgentProcess, agent_config
from tests.support.platform import PlatformClient

pytestmark = pytest.mark.broker

DEVICE = "dev-msg"
USER_TOPIC = f"$oc/devices/{DEVICE}/user/messageDown"
POLICY_TOPIC = f"policy/{DEVICE}/down"
SYSTEM_TOPIC = f"$oc/devices/{DEVICE}/sys/messages/down"

RAW_PAYLOADS = [
    b"plain text",
    bytes(range(256)),  # every byte value, NUL and invalid UTF-8 included
    b'{"not": "the system format"}',
    b"[1, 2, 3]",
    b"{broken json",
    b"  \r\n trailing whitespace \r\n",
    b"",
    os.urandom(60_000),
]


def _agent(tmp_path: Path, port: int) -> AgentProcess:
    config = agent_config(
        tmp_path,
        port,
        device_id=DEVICE,
        messages={"user_topics": ["$oc/devices/{device_id}/user/messageDown", "policy/+/down"]},
    )
    return AgentProcess(config, tmp_path)


def _spooled(spool: Path) -> list[tuple[dict[str, object], bytes]]:
    """Every complete spool entry: its description and its content file's bytes."""
    entries = []
    for described in sorted(spool.glob("*.json")):
        meta = json.loads(described.read_text())
        entries.append((meta, (spool / str(meta["content_file"])).read_bytes()))
    return entries


def test_raw_messages_on_user_topics_are_spooled_byte_identical(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Raw payloads on custom, policy and system topics land in the spool exactly as sent."""
    agent = _agent(tmp_path, broker.port)
    agent.start()
    sent = [(topic, payload) for topic in (USER_TOPIC, POLICY_TOPIC) for payload in RAW_PAYLOADS]
    sent.append((SYSTEM_TOPIC, b"\x00raw on the system topic"))
    with PlatformClient(broker.port, DEVICE, client_id="platform-raw") as platform:
        for topic, payload in sent:
            platform.send(platform.side.message(payload, raw=True, topic=topic))
        agent.wait_event("subtask.finished", 30, count=len(sent))
    assert agent.stop() == 0

    entries = _spooled(tmp_path / "spool")
    assert Counter((str(meta["topic"]), content) for meta, content in entries) == Counter(sent)
    for meta, content in entries:
        assert meta["format"] == "raw"
        assert meta["size"] == len(content)
        assert meta["message_id"] is None
    assert not list((tmp_path / "spool").glob(".*.tmp"))  # no half-written files left behind


def test_a_message_id_delivered_twice_is_spooled_once(tmp_path: Path, broker: Mosquitto) -> None:
    """The same message id again (system or custom topic) is a duplicate; raw repeats are not."""
    agent = _agent(tmp_path, broker.port)
    agent.start()
    with PlatformClient(broker.port, DEVICE, client_id="platform-dup") as platform:
        for _ in range(2):
            platform.send(platform.side.message("on the system topic", message_id="m-1"))
            platform.send(
                platform.side.message("on a custom topic", message_id="m-2", topic=USER_TOPIC)
            )
            # Without an id, equal content sent twice is two messages (only a broker
            # redelivery, marked DUP, counts as the same one).
            platform.send(platform.side.message(b"no id", raw=True, topic=USER_TOPIC))
        agent.wait_event("subtask.duplicate", 30, count=2)
        agent.wait_event("subtask.finished", 30, count=4)
    assert agent.stop() == 0

    entries = _spooled(tmp_path / "spool")
    by_id = Counter(meta["message_id"] for meta, _ in entries)
    assert by_id == Counter({"m-1": 1, "m-2": 1, None: 2})
    contents = {meta["message_id"]: content for meta, content in entries}
    assert contents["m-1"] == b"on the system topic"
    assert contents["m-2"] == b"on a custom topic"
    assert {line["key"].rsplit("/", 1)[1] for line in agent.events("subtask.duplicate")} == {
        "m-1",
        "m-2",
    }


def test_a_raw_message_redelivered_after_a_crash_is_spooled_once(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Killed after journaling, before the PUBACK: the broker's redelivery is not spooled twice."""
    agent = _agent(tmp_path, broker.port)
    agent.env = {"DEVICE_AGENT_FAILPOINTS": "dispatcher.after_accept=kill"}
    agent.start()
    payload = bytes(range(255, -1, -1))
    with PlatformClient(broker.port, DEVICE, client_id="platform-crash") as platform:
        platform.send(platform.side.message(payload, raw=True, topic=USER_TOPIC))
        assert agent.wait_exit(30) == -signal.SIGKILL
        assert _spooled(tmp_path / "spool") == []

        agent.env = {}
        agent.start()
        agent.wait_event("subtask.duplicate", 30)  # the broker's redelivery, recognised
        agent.wait_event("subtask.finished", 30)  # the journaled message, resumed
    assert agent.stop() == 0

    entries = _spooled(tmp_path / "spool")
    assert [(meta["topic"], content) for meta, content in entries] == [(USER_TOPIC, payload)]

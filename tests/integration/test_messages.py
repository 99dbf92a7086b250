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


def test_a_full_spool_refuses_new_messages_and_deletes_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """With room for 3, messages 4 and 5 are refused and logged; the 3 stay; room makes room."""
    config = agent_config(
        tmp_path,
        broker.port,
        device_id=DEVICE,
        messages={"user_topics": [USER_TOPIC], "spool_max_messages": 3},
    )
    agent = AgentProcess(config, tmp_path)
    agent.start()
    spool = tmp_path / "spool"
    with PlatformClient(broker.port, DEVICE, client_id="platform-full") as platform:
        for index in range(5):
            platform.send(platform.side.message(f"m{index}".encode(), raw=True, topic=USER_TOPIC))
        agent.wait_event("subtask.finished", 30, count=5)
        full = agent.events("message.spool.full")
        assert len(full) == 2, full
        assert "spool_max_messages" in str(full[0]["reason"])
        # Messages run concurrently: any three may win, but none is deleted to make room.
        kept = sorted(content for _, content in _spooled(spool))
        assert len(kept) == 3
        assert set(kept) <= {f"m{index}".encode() for index in range(5)}
        # A consumer takes one message out: the next one fits.
        first = sorted(spool.glob("*.json"))[0]
        content_file = spool / json.loads(first.read_text())["content_file"]
        taken = content_file.read_bytes()
        content_file.unlink()
        first.unlink()
        platform.send(platform.side.message(b"m5", raw=True, topic=USER_TOPIC))
        agent.wait_event("subtask.finished", 30, count=6)
    assert agent.stop() == 0
    left = sorted(content for _, content in _spooled(spool))
    assert left == sorted([*(c for c in kept if c != taken), b"m5"])


def test_the_spool_byte_limit_refuses_what_would_not_fit(tmp_path: Path, broker: Mosquitto) -> None:
    """A message that would take the spool past spool_max_bytes is refused; smaller ones fit."""
    config = agent_config(
        tmp_path,
        broker.port,
        device_id=DEVICE,
        messages={"user_topics": [USER_TOPIC], "spool_max_bytes": 64 * 1024},
    )
    agent = AgentProcess(config, tmp_path)
    agent.start()
    with PlatformClient(broker.port, DEVICE, client_id="platform-bytes") as platform:
        platform.send(platform.side.message(b"a" * 40_000, raw=True, topic=USER_TOPIC))
        platform.send(platform.side.message(b"b" * 40_000, raw=True, topic=USER_TOPIC))
        platform.send(platform.side.message(b"small", raw=True, topic=USER_TOPIC))
        agent.wait_event("subtask.finished", 30, count=3)
    assert agent.stop() == 0
    assert len(agent.events("message.spool.full")) == 1
    # Messages run concurrently: either large one may take the room, never both.
    kept = sorted((content for _, content in _spooled(tmp_path / "spool")), key=len)
    assert kept[0] == b"small"
    assert kept[1:] in ([b"a" * 40_000], [b"b" * 40_000])

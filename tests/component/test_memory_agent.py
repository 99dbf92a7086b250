"""A whole agent, built as the daemon builds it, on the in-memory broker of agent.testing."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.app.agent import Agent
from agent.config import load_config
from agent.core.model import ConnectIdentity, Publish, Subscription
from agent.journal.memory import MemoryJournal
from agent.profiles.huawei_iotda.platform import HuaweiIotdaPlatform
from agent.testing import MemoryBroker, PlatformPeer, agent_on, until
from agent.transport.base import CallbackLink, InboundMessage
from agent.transport.memory import MemoryTransport
from tests.support.agents import (
    DEVICE_SECRET,
    HANGING_HANDLER,
    RECORDING_HANDLER,
    agent_config,
    write_handler,
)

DEVICE = "dev-1"
ANSWERS = f"$oc/devices/{DEVICE}/sys/commands/response/#"


@pytest.fixture(name="rig")
async def _rig(tmp_path: Path) -> AsyncIterator[tuple[MemoryBroker, Agent, PlatformPeer, Path]]:
    record = tmp_path / "executions"
    write_handler(tmp_path / "handlers", "record", RECORDING_HANDLER)
    route = {
        "service_id": "Valve",
        "command_name": "SET",
        "handler": {
            "argv": [str(tmp_path / "handlers" / "record")],
            "env": {"RECORD_FILE": str(record)},
        },
    }
    config = load_config(agent_config(tmp_path, 1883, routes=[route]))
    broker = MemoryBroker()
    platform = PlatformPeer(broker, [f"$oc/devices/{DEVICE}/sys/#"])
    agent = agent_on(broker, config, journal=MemoryJournal(), secret=DEVICE_SECRET)
    await platform.start()
    await agent.start()
    await until(agent.transport.ready.is_set, "the agent to connect")
    yield broker, agent, platform, record
    await agent.stop(grace=1.0, flush_timeout=1.0)
    await platform.close()


async def test_a_command_is_run_and_answered_without_a_socket(
    rig: tuple[MemoryBroker, Agent, PlatformPeer, Path],
) -> None:
    """The platform's command reaches the handler; its answer comes back on the response topic."""
    _, _, platform, record = rig
    huawei = HuaweiIotdaPlatform(DEVICE)

    await platform.send(huawei.command("r-1", "SET", {"open": True}, service_id="Valve"))
    answer = await platform.next(ANSWERS)

    assert answer.topic.endswith("request_id=r-1")
    body = json.loads(answer.payload)
    assert body["result_code"] == 0
    assert body["paras"] == {"echo": {"open": True}}
    assert record.read_text().split() == ["r-1"]


async def test_a_command_redelivered_after_a_lost_connection_runs_once(
    rig: tuple[MemoryBroker, Agent, PlatformPeer, Path],
) -> None:
    """A delivery sent again (dup) after the broker cut the agent off is answered, not re-run."""
    broker, agent, platform, record = rig
    huawei = HuaweiIotdaPlatform(DEVICE)
    await platform.send(huawei.command("r-2", "SET", {}, service_id="Valve"))
    await platform.next(ANSWERS)

    await platform.send(huawei.command("r-2", "SET", {}, service_id="Valve"))
    broker.disconnect(agent.profile.connect_identity(DEVICE_SECRET, _now()).client_id)
    second = await platform.next(ANSWERS)

    assert second.topic.endswith("request_id=r-2")
    assert json.loads(second.payload)["result_code"] == 0
    assert record.read_text().split() == ["r-2"]


async def test_the_memory_broker_redelivers_unacknowledged_messages_marked_dup() -> None:
    """QoS 1 deliveries not acknowledged come again, with dup set, when the session reconnects."""
    broker = MemoryBroker()
    seen: list[InboundMessage] = []
    acking = False

    def received(message: InboundMessage) -> None:
        seen.append(message)
        if acking:
            device.ack(message)

    device = MemoryTransport(
        broker,
        link=CallbackLink(
            identity=lambda: ConnectIdentity(client_id="d", username=None, password=None),
            subscriptions=lambda: [Subscription(topic_filter="$oc/#")],
            on_message=received,
        ),
    )
    platform = PlatformPeer(broker, [], client_id="p")
    task = asyncio.get_running_loop().create_task(device.run())
    await platform.start()
    await until(device.ready.is_set, "the device to connect")
    await platform.send(_publish("$oc/a", b"1"))
    await platform.send(_publish("other/b", b"2"))  # matched by no filter of the device
    await until(lambda: len(seen) == 1, "the first delivery")

    acking = True
    broker.disconnect("d")
    await until(lambda: len(seen) == 2, "the redelivery")
    await until(lambda: not broker.sessions["d"].unacked, "the PUBACK")

    assert [(m.topic, m.payload, m.dup) for m in seen] == [
        ("$oc/a", b"1", False),
        ("$oc/a", b"1", True),
    ]
    await device.close()
    await task
    await platform.close()


def _publish(topic: str, payload: bytes) -> Publish:
    return Publish(topic=topic, payload=payload)


def _now() -> datetime:
    return datetime.now(UTC)


async def test_a_killed_agent_leaves_nothing_running_and_its_successor_recovers(
    tmp_path: Path,
) -> None:
    """kill() returns with no task of the agent left; the next agent alone ends its command."""
    write_handler(tmp_path / "handlers", "hang", HANGING_HANDLER)
    route = {
        "service_id": "Valve",
        "command_name": "HANG",
        "handler": {
            "argv": [str(tmp_path / "handlers" / "hang")],
            "env": {"PID_FILE": str(tmp_path / "pids")},
        },
    }
    config = load_config(agent_config(tmp_path, 1883, routes=[route]))
    broker = MemoryBroker()
    platform = PlatformPeer(broker, [f"$oc/devices/{DEVICE}/sys/#"])
    journal = MemoryJournal()
    await platform.start()
    before = asyncio.all_tasks()
    agent = agent_on(broker, config, journal=journal, secret=DEVICE_SECRET)
    await agent.start()
    await until(agent.transport.ready.is_set, "the agent to connect")
    huawei = HuaweiIotdaPlatform(DEVICE)
    await platform.send(huawei.command("r-9", "HANG", {}, service_id="Valve"))
    await until((tmp_path / "pids").exists, "the handler to run")

    await agent.kill()

    left = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert left == set(), f"still running after kill: {sorted(t.get_name() for t in left)}"
    answers = [m for m in platform.received if "/commands/response/" in m.topic]
    assert answers == []  # nothing answered or flushed by the killed run
    for pid in map(int, (tmp_path / "pids").read_text().split()[:1]):
        assert not _alive(pid), "the handler outlived the killed agent"
    successor = agent_on(broker, config, journal=journal, secret=DEVICE_SECRET)
    await successor.start()
    answer = await platform.next(ANSWERS)
    assert answer.topic.endswith("request_id=r-9")
    assert json.loads(answer.payload)["result_code"] == 6  # interrupted, answered once
    await successor.stop(grace=1.0, flush_timeout=1.0)
    await platform.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

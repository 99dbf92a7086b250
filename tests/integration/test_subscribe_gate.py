"""A fleet's shared subscribe gate bounds the SUBSCRIBE exchanges in flight across connections.

On a clustered broker (NATS) every accepted filter is a JetStream consumer the cluster must
create in time; the simulator bounds how many SUBSCRIBEs its agents have outstanding at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

import pytest

from agent.config import MqttSettings
from agent.core.model import ConnectIdentity, Subscription
from agent.runtime.logging import get_logger
from agent.sim.mosquitto import Mosquitto
from agent.transport.base import CallbackLink, InboundMessage
from agent.transport.paho_bridge import MqttConnection

pytestmark = pytest.mark.broker


class _CountingGate(asyncio.Semaphore):
    """A semaphore that counts who passed and how many held it at once."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.passed = 0
        self.holding = 0
        self.most_at_once = 0

    async def __aenter__(self) -> None:
        await super().__aenter__()
        self.passed += 1
        self.holding += 1
        self.most_at_once = max(self.most_at_once, self.holding)
        await asyncio.sleep(0.02)  # held across loop turns: others would overlap if they could

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.holding -= 1
        await super().__aexit__(kind, error, trace)


def _connection(port: int, n: int, gate: asyncio.Semaphore) -> MqttConnection:
    identity = ConnectIdentity(client_id=f"gate-{n}", username=None, password=None)

    def ignore(_: InboundMessage) -> None:
        return None

    link = CallbackLink(
        identity=lambda: identity,
        subscriptions=lambda: [Subscription(topic_filter=f"gate/{n}/{i}") for i in range(3)],
        on_message=ignore,
    )
    return MqttConnection(
        MqttSettings(host="127.0.0.1", port=port, keepalive_s=30, filters_per_subscribe=1),
        link=link,
        subscribe_gate=gate,
        log=get_logger(component="test-gate"),
    )


async def test_subscribes_pass_the_shared_gate_one_at_a_time(broker: Mosquitto) -> None:
    """With a gate of one, no two connections' SUBSCRIBE exchanges overlap.

    Six connections of three filters (one per SUBSCRIBE): each passes the gate once and all
    end subscribed.
    """
    gate = _CountingGate(1)
    connections = [_connection(broker.port, n, gate) for n in range(6)]
    tasks = [asyncio.create_task(c.run()) for c in connections]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in connections)), 30)
    finally:
        for connection in connections:
            await connection.close()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    assert gate.passed == 6
    assert gate.most_at_once == 1

"""STATUS= follows the connection: a transport that says when its state changes is heard at once."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agent.app import report as report_module
from agent.app.report import report, snapshot


class _Notifier:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.sent = asyncio.Event()

    def status(self, line: str) -> None:
        self.lines.append(line)
        self.sent.set()


def _agent(transport: Any) -> Any:
    async def set_value(*args: object) -> None:
        return None

    return SimpleNamespace(
        transport=transport,
        dispatcher=SimpleNamespace(in_flight=0),
        outbox=SimpleNamespace(backlog=0),
        journal=SimpleNamespace(set_value=set_value),
        agent_id="a",
    )


async def test_a_state_change_is_reported_without_waiting_for_the_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connected is sent as soon as the transport signals it, not a poll interval later."""
    monkeypatch.setattr(report_module, "_POLL_S", 3600.0)
    transport = SimpleNamespace(
        state="connecting",
        last_error=None,
        connects=0,
        ready=asyncio.Event(),
        state_changed=asyncio.Event(),
    )
    agent = _agent(transport)
    notifier = _Notifier()
    task = asyncio.create_task(report(agent, cast(Any, notifier), snapshot(agent, 0.0)))
    try:
        await asyncio.sleep(0)
        transport.state, transport.connects = "connected", 1
        transport.state_changed.set()
        await asyncio.wait_for(notifier.sent.wait(), 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert notifier.lines == ["connected; 0 subtasks running; outbox 0"]

"""The daemon's state as others see it: systemd's STATUS= line and the record `status` reads.

The record is one JSON value in the journal's key/value table (``daemon_status``), written when
the connection state changes and every ``_REFRESH_S``; `device-agent status` reads it from
another process, and the metrics file is written from the same snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from agent import __version__
from agent.app.agent import Agent
from agent.core.errors import AgentError
from agent.journal.status import DAEMON_STATUS
from agent.runtime.sdnotify import Notifier

# How soon `systemctl status` shows that the connection went away (or came back), for a
# transport that does not say when its state changes (one that does is heard at once).
_POLL_S = 1.0
# Between changes the record and STATUS= are refreshed this often (counts move).
_REFRESH_S = 30.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the daemon knows about itself at one moment."""

    state: str
    version: str
    pid: int
    started_at: float
    updated_at: float
    last_error: str | None
    connects: int
    queue: int
    outbox: int

    def status_line(self) -> str:
        """The STATUS= text: state first (systemctl status shows it)."""
        return f"{self.state}; {self.queue} subtasks running; outbox {self.outbox}"

    def to_json(self) -> str:
        """The record stored in the journal."""
        return json.dumps(asdict(self), sort_keys=True)


def connection_state(agent: Agent) -> tuple[str, str | None, int]:
    """(state, last error, successful connects) of the agent's transport."""
    transport: Any = agent.transport
    fallback = "connected" if agent.transport.ready.is_set() else "connecting"
    return (
        str(getattr(transport, "state", fallback)),
        getattr(transport, "last_error", None),
        int(getattr(transport, "connects", 0)),
    )


def snapshot(agent: Agent, started_at: float, *, state: str | None = None) -> Snapshot:
    """The agent's state now (``state`` overrides the connection's, e.g. "stopping")."""
    current, error, connects = connection_state(agent)
    return Snapshot(
        state=state or current,
        version=__version__,
        pid=os.getpid(),
        started_at=started_at,
        updated_at=time.time(),
        last_error=error,
        connects=connects,
        queue=agent.dispatcher.in_flight,
        outbox=agent.outbox.backlog,
    )


def snapshot_line(agent: Agent) -> str:
    """The STATUS= text for the agent now."""
    current, _, _ = connection_state(agent)
    return (
        f"{current}; {agent.dispatcher.in_flight} subtasks running; outbox {agent.outbox.backlog}"
    )


async def record(agent: Agent, snap: Snapshot) -> None:
    """Store ``snap`` for `device-agent status` (a journal that fails is the watchdog's job)."""
    with contextlib.suppress(AgentError):
        await agent.journal.set_value(agent.agent_id, DAEMON_STATUS, snap.to_json())


async def report(
    agent: Agent,
    notifier: Notifier,
    first: Snapshot,
    *,
    extra: Callable[[Snapshot], None] | None = None,
) -> None:
    """STATUS= and the record when the state or last error change and every ``_REFRESH_S``.

    ``first`` went out with READY=1 already.
    """
    loop = asyncio.get_running_loop()
    started_at, sent_at = first.started_at, loop.time()
    last = (first.state, first.last_error)
    await record(agent, first)
    if extra is not None:
        extra(first)
    changed: asyncio.Event | None = getattr(agent.transport, "state_changed", None)
    while True:
        await _next_look(changed)
        snap = snapshot(agent, started_at)
        if (snap.state, snap.last_error) != last or loop.time() - sent_at >= _REFRESH_S:
            notifier.status(snap.status_line())
            await record(agent, snap)
            if extra is not None:
                extra(snap)
            last, sent_at = (snap.state, snap.last_error), loop.time()


async def _next_look(changed: asyncio.Event | None) -> None:
    """Until the transport's state changes, or ``_POLL_S`` has passed."""
    if changed is None:
        await asyncio.sleep(_POLL_S)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_POLL_S):
            await changed.wait()
    changed.clear()

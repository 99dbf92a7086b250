"""An in-memory journal with the same contract as the SQLite one (fast tests, throwaway fleets).

It forgets everything when the process ends, so it only suits runs that never restart an agent
expecting to find its work again.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from agent.core.errors import JournalError
from agent.core.model import Publish
from agent.journal.base import (
    Accepted,
    AcceptOutcome,
    Finish,
    OpenSubtask,
    OutboxItem,
    SubtaskState,
    archive_key,
)


@dataclass
class _Subtask:
    agent_id: str
    kind: str
    state: str
    request: str
    received_at: float
    detail: dict[str, Any] = field(default_factory=dict)
    finished_at: float | None = None
    replies: list[Publish] = field(default_factory=list)


class MemoryJournal:
    """A :class:`~agent.journal.base.Journal` held in dictionaries."""

    def __init__(self) -> None:
        self._subtasks: dict[str, _Subtask] = {}
        self._outbox: dict[int, tuple[str, OutboxItem]] = {}
        self._values: dict[tuple[str, str], str] = {}
        self._ids = itertools.count(1)

    async def accept(
        self,
        agent_id: str,
        *,
        key: str,
        device_id: str,
        kind: str,
        request: str,
        now: float,
        state: str = SubtaskState.ACCEPTED,
        finish: Finish | None = None,
        retry_failed: bool = False,
    ) -> Accepted:
        """Record a received subtask unless its key is known."""
        known = self._subtasks.get(key)
        if known is not None:
            if known.finished_at is None:
                return Accepted(AcceptOutcome.IN_PROGRESS, known.state, [])
            if not (retry_failed and known.state == SubtaskState.FAILED):
                return Accepted(
                    AcceptOutcome.FINISHED, known.state, self._enqueue(agent_id, known.replies)
                )
            self._subtasks[archive_key(key, known.finished_at)] = self._subtasks.pop(key)
        self._subtasks[key] = _Subtask(agent_id, kind, state, request, now)
        if finish is None:
            return Accepted(AcceptOutcome.NEW, state, [])
        return Accepted(AcceptOutcome.NEW, finish.state, self._finish(agent_id, key, finish, now))

    async def record_state(self, key: str, state: str, detail: dict[str, Any], now: float) -> None:
        """Record an intermediate state."""
        subtask = self._open(key)
        subtask.state = state
        subtask.detail = dict(detail)

    async def finish(self, agent_id: str, key: str, finish: Finish, now: float) -> list[OutboxItem]:
        """Record a subtask's end and queue its answers."""
        return self._finish(agent_id, key, finish, now)

    async def enqueue(
        self, agent_id: str, publishes: list[Publish], now: float
    ) -> list[OutboxItem]:
        """Queue publications."""
        return self._enqueue(agent_id, publishes)

    async def open_subtasks(self, agent_id: str) -> list[OpenSubtask]:
        """Open subtasks of one agent, oldest first."""
        rows = [
            OpenSubtask(key, s.kind, s.state, s.request, dict(s.detail), s.received_at)
            for key, s in self._subtasks.items()
            if s.agent_id == agent_id and s.finished_at is None
        ]
        return sorted(rows, key=lambda row: row.received_at)

    async def pending(self, agent_id: str, after_id: int, limit: int) -> list[OutboxItem]:
        """Queued publications after ``after_id``."""
        items = [item for owner, item in self._outbox.values() if owner == agent_id]
        return sorted((i for i in items if i.id > after_id), key=lambda i: i.id)[:limit]

    async def delivered(self, ids: list[int]) -> None:
        """Drop acknowledged publications."""
        for item_id in ids:
            self._outbox.pop(item_id, None)

    async def get_value(self, agent_id: str, name: str) -> str | None:
        """Read a per-agent value."""
        return self._values.get((agent_id, name))

    async def set_value(self, agent_id: str, name: str, value: str) -> None:
        """Write a per-agent value."""
        self._values[(agent_id, name)] = value

    async def prune(self, finished_before: float) -> int:
        """Forget old finished subtasks."""
        old = [
            key
            for key, s in self._subtasks.items()
            if s.finished_at is not None and s.finished_at < finished_before
        ]
        for key in old:
            del self._subtasks[key]
        return len(old)

    async def ping(self) -> None:
        """Nothing to wait for."""

    async def close(self) -> None:
        """Nothing to release."""

    def _open(self, key: str) -> _Subtask:
        subtask = self._subtasks.get(key)
        if subtask is None or subtask.finished_at is not None:
            msg = f"subtask {key!r} is not open"
            raise JournalError(msg)
        return subtask

    def _finish(self, agent_id: str, key: str, finish: Finish, now: float) -> list[OutboxItem]:
        subtask = self._open(key)
        subtask.state = finish.state
        subtask.finished_at = now
        subtask.replies = list(finish.publishes)
        return self._enqueue(agent_id, finish.publishes)

    def _enqueue(self, agent_id: str, publishes: list[Publish]) -> list[OutboxItem]:
        items = []
        for publish in publishes:
            item = OutboxItem(next(self._ids), publish.topic, publish.payload, publish.qos)
            self._outbox[item.id] = (agent_id, item)
            items.append(item)
        return items

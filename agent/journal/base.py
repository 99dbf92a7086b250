"""The journal's contract: subtasks recorded before they are acknowledged, results kept until sent.

A subtask is written down before its MQTT delivery is acknowledged; a result stays queued until
the broker has acknowledged it.

Rows are partitioned by ``agent_id`` (the identity of the MQTT connection, which is the gateway
for child devices), so one journal can serve a whole simulated fleet.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from agent.core.model import Publish


class AcceptOutcome(enum.Enum):
    """What :meth:`Journal.accept` found."""

    NEW = "new"  # first time seen: the caller executes it
    IN_PROGRESS = "in_progress"  # seen and still running: nothing to do, its result will follow
    FINISHED = "finished"  # seen and finished: its stored replies were queued again


def archive_key(key: str, finished_at: float) -> str:
    """The key a failed subtask keeps when the same work is asked for again."""
    return f"{key}#failed-{finished_at:.6f}"


class SubtaskState:
    """Subtask states the journal knows about; executors may journal their own in between."""

    ACCEPTED = "accepted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TERMINAL = frozenset({SUCCEEDED, FAILED})


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A publication waiting for the broker's acknowledgement."""

    id: int
    topic: str
    payload: bytes
    qos: int


@dataclass(frozen=True, slots=True)
class Finish:
    """The end of a subtask: its terminal state, a summary and the answers to publish."""

    state: str
    result: dict[str, Any]
    publishes: list[Publish]


@dataclass(frozen=True, slots=True)
class Accepted:
    """Result of :meth:`Journal.accept`; ``requeued`` holds replies queued again for a repeat."""

    outcome: AcceptOutcome
    state: str
    requeued: list[OutboxItem]


@dataclass(frozen=True, slots=True)
class OpenSubtask:
    """A subtask that was accepted but has not reached a terminal state."""

    key: str
    kind: str
    state: str
    request: str  # the subtask as JSON
    detail: dict[str, Any]
    received_at: float


@dataclass(frozen=True, slots=True)
class SubtaskRow:
    """A subtask as the status command shows it."""

    key: str
    agent_id: str
    device_id: str
    kind: str
    state: str
    result: dict[str, Any] | None
    received_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class OutboxSummary:
    """How much is waiting for the broker, and since when."""

    count: int
    oldest: float | None


class Journal(Protocol):
    """Durable record of subtasks and unacknowledged results."""

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
        """Record a received subtask (and, for a rejected request, its end) in one transaction.

        ``state`` is the state it starts in: ``accepted`` (waiting to run) or one an executor
        chose, such as ``running`` when it starts at once. With ``retry_failed``, a known
        subtask that ended ``failed`` is kept under an archive key and this one is new.
        """

    async def record_state(self, key: str, state: str, detail: dict[str, Any], now: float) -> None:
        """Record an intermediate state before the side effect it announces."""

    async def finish(self, agent_id: str, key: str, finish: Finish, now: float) -> list[OutboxItem]:
        """Record a subtask's end and queue its answers, atomically."""

    async def enqueue(
        self, agent_id: str, publishes: list[Publish], now: float
    ) -> list[OutboxItem]:
        """Queue publications that are not tied to a subtask but must reach the platform."""

    async def open_subtasks(self, agent_id: str) -> list[OpenSubtask]:
        """Subtasks of ``agent_id`` that have not ended (to resume or close after a restart)."""

    async def pending(self, agent_id: str, after_id: int, limit: int) -> list[OutboxItem]:
        """Queued publications of ``agent_id`` with an id above ``after_id``, oldest first."""

    async def delivered(self, ids: list[int]) -> None:
        """Forget publications the broker acknowledged."""

    async def get_value(self, agent_id: str, name: str) -> str | None:
        """A small piece of per-agent state (session anchor, versions)."""

    async def set_value(self, agent_id: str, name: str, value: str) -> None:
        """Store a small piece of per-agent state."""

    async def prune(self, finished_before: float) -> int:
        """Drop finished subtasks older than ``finished_before``; returns how many."""

    async def ping(self) -> None:
        """Round trip through the journal's worker (watchdog liveness)."""

    async def close(self) -> None:
        """Flush and release the journal."""

"""The executor contract shared by every kind of subtask."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.journal.base import SubtaskState
from agent.model import Outbound, Subtask


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a subtask ended: success or not, a summary for the journal and logs, the answers."""

    ok: bool
    summary: dict[str, Any]
    replies: list[Outbound] = field(default_factory=list)

    @property
    def state(self) -> str:
        """The terminal journal state this outcome maps to."""
        return SubtaskState.SUCCEEDED if self.ok else SubtaskState.FAILED


@dataclass(frozen=True, slots=True)
class Context:
    """What an executor may know about the subtask's surroundings."""

    agent_id: str
    received_at: float
    log: Any


class Executor(Protocol):
    """Carries out one kind of subtask."""

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        """Do the work and say how it ended; cancellation means the agent is stopping."""

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        """End a subtask found open after a restart, which may already have started running."""

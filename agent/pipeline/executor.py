"""The executor contract shared by every kind of subtask."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agent.core.model import Outbound, Subtask
from agent.journal.base import SubtaskState

if TYPE_CHECKING:
    from agent.pipeline.uplink import Uplink


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
    uplink: Uplink


class Executor(Protocol):
    """Carries out one kind of subtask."""

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        """Do the work and say how it ended; cancellation means the agent is stopping."""

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        """End a subtask found open after a restart, which may already have started running."""


@runtime_checkable
class ConnectAware(Protocol):
    """An executor that has something to say (or ask) after every (re)connect."""

    async def connected(self, uplink: Uplink) -> None:
        """Called once the connection is up and subscribed, before READY is announced."""

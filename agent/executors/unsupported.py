"""Requests this agent understands but does not carry out: answered with a clear failure."""

from __future__ import annotations

from agent.core.model import RequestRejected, Subtask, UnsupportedRequest
from agent.pipeline.executor import Context, Outcome


class UnsupportedExecutor:
    """Answers :class:`~agent.core.model.UnsupportedRequest` subtasks with a failure."""

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        """Reject the request, saying what is not supported."""
        assert isinstance(subtask, UnsupportedRequest)  # noqa: S101 - routed by kind
        description = f"{subtask.request_kind} is not supported by this agent's configuration"
        reply = RequestRejected(
            device_id=subtask.device_id,
            correlation=subtask.correlation,
            request_kind=subtask.request_kind,
            result_code=1,
            description=description,
        )
        return Outcome(ok=False, summary={"error": "unsupported"}, replies=[reply])

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        """Answering is idempotent: answer again."""
        return await self.execute(subtask, ctx)

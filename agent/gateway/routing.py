"""Child-addressed work: commands and property sets for a child go to its adapter.

Commands for the gateway itself still run the configured command handlers; commands whose
``object_device_id`` names a known child run through that child's adapter; commands for an
unknown child are refused.
"""

from __future__ import annotations

from typing import Any

from agent.core.model import (
    ChildPropertiesSet,
    CommandRequest,
    CommandResponse,
    CommandResult,
    PropertiesSetAnswer,
    ResultCode,
    Subtask,
)
from agent.gateway.adapters import ChildAdapter
from agent.gateway.registry import ChildRegistry
from agent.pipeline.executor import Context, Executor, Outcome


class ChildCommandRouter:
    """Executes commands: the gateway's own through ``inner``, a child's through its adapter."""

    def __init__(
        self,
        inner: Executor,
        *,
        agent_id: str,
        registry: ChildRegistry,
        adapters: dict[str, ChildAdapter],
    ) -> None:
        self._inner = inner
        self._agent_id = agent_id
        self._registry = registry
        self._adapters = adapters

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        """Route by the command's target device."""
        assert isinstance(subtask, CommandRequest)  # noqa: S101 - routed by kind
        if subtask.device_id == self._agent_id:
            return await self._inner.execute(subtask, ctx)
        await self._registry.load()
        child = self._registry.get(subtask.device_id)
        adapter = self._adapters.get(child.type) if child else None
        if child is None or adapter is None:
            ctx.log.warning("child.command.unknown_child", child=subtask.device_id)
            result = CommandResult.failure(
                ResultCode.UNKNOWN_COMMAND, "unknown_child", child=subtask.device_id
            )
        else:
            result = await adapter.command(child, subtask)
        reply = CommandResponse(
            device_id=subtask.device_id, correlation=subtask.correlation, result=result
        )
        summary: dict[str, Any] = {"result_code": result.result_code, "child": child is not None}
        return Outcome(ok=result.ok, summary=summary, replies=[reply])

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        """Never run twice: the inner executor reports it as interrupted."""
        return await self._inner.recover(subtask, state, ctx)


class ChildPropertiesExecutor:
    """Applies property sets addressed to children through their adapters."""

    def __init__(
        self, *, registry: ChildRegistry | None, adapters: dict[str, ChildAdapter]
    ) -> None:
        self._registry = registry
        self._adapters = adapters

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        """Hand the services to the child's adapter and answer with its result."""
        assert isinstance(subtask, ChildPropertiesSet)  # noqa: S101 - routed by kind
        child = None
        if self._registry is not None:
            await self._registry.load()
            child = self._registry.get(subtask.device_id)
        adapter = self._adapters.get(child.type) if child else None
        if child is None or adapter is None:
            code, description = 1, f"no child device {subtask.device_id!r} behind this gateway"
        else:
            code, description = await adapter.set_properties(child, subtask.services)
        answer = PropertiesSetAnswer(
            device_id=subtask.device_id,
            correlation=subtask.correlation,
            result_code=code,
            description=description[:256],
        )
        return Outcome(ok=code == 0, summary={"result_code": code}, replies=[answer])

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        """Setting the same properties again is harmless: do it again."""
        return await self.execute(subtask, ctx)

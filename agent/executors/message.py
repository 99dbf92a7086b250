"""Down-link messages: written to a spool directory (atomically) and/or handed to a handler.

Spool layout: for each message ``{stem}.bin`` holds the content exactly as received and
``{stem}.json`` describes it. The ``.json`` file is written last, so a consumer that watches
for ``*.json`` never sees a message whose content is not complete. Stems start with the receive
time, so sorting names gives arrival order; they end with a digest of the subtask key, so
writing the same message again (after a crash) replaces it instead of adding a second copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.config import CommandSettings, MessageSettings
from agent.core.errors import ExecutionError
from agent.core.model import MessageDelivery, Subtask
from agent.executors.process import run_process
from agent.pipeline.executor import Context, Outcome
from agent.runtime.files import write_atomically


def spool_stem(message: MessageDelivery, received_at: float) -> str:
    """The file-name stem of a message: receive time, then a digest of its key."""
    stamp = datetime.fromtimestamp(received_at, UTC).strftime("%Y%m%dT%H%M%S.%f")
    return f"{stamp}-{hashlib.sha256(message.key.encode()).hexdigest()[:24]}"


def spool_message(directory: Path, message: MessageDelivery, received_at: float) -> Path:
    """Write one message into the spool; returns the path of its description."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = spool_stem(message, received_at)
    write_atomically(directory / f"{stem}.bin", message.content)
    meta = {
        "key": message.key,
        "device_id": message.device_id,
        "topic": message.topic,
        "message_id": message.message_id,
        "name": message.name,
        "format": message.format,
        "size": len(message.content),
        "received_at": datetime.fromtimestamp(received_at, UTC).isoformat(),
        "content_file": f"{stem}.bin",
    }
    described = directory / f"{stem}.json"
    write_atomically(described, json.dumps(meta, indent=1).encode())
    return described


class MessageExecutor:
    """Executes :class:`~agent.core.model.MessageDelivery` subtasks."""

    def __init__(self, settings: MessageSettings, commands: CommandSettings) -> None:
        self.settings = settings
        self.commands = commands

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        """Spool the message and run the message handler, as configured."""
        assert isinstance(subtask, MessageDelivery)  # noqa: S101 - the dispatcher routes by kind
        summary: dict[str, Any] = {"size": len(subtask.content), "format": subtask.format}
        if self.settings.spool_dir is not None:
            try:
                path = await asyncio.to_thread(
                    spool_message, self.settings.spool_dir, subtask, ctx.received_at
                )
            except OSError as exc:
                ctx.log.error("message.spool.failed", error=str(exc))
                return Outcome(ok=False, summary={**summary, "error": f"spool: {exc.strerror}"})
            summary["spooled"] = path.name
        if self.settings.handler is not None:
            ok, detail = await self._run_handler(subtask)
            summary.update(detail)
            if not ok:
                return Outcome(ok=False, summary=summary)
        return Outcome(ok=True, summary=summary)

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        """Spooling again is harmless (same file); a handler that may have run is not run again."""
        assert isinstance(subtask, MessageDelivery)  # noqa: S101
        if self.settings.handler is not None:
            return Outcome(ok=False, summary={"error": "interrupted"})
        return await self.execute(subtask, ctx)

    async def _run_handler(self, message: MessageDelivery) -> tuple[bool, dict[str, Any]]:
        handler = self.settings.handler
        assert handler is not None  # noqa: S101
        env = {
            **handler.env,
            "DEVICE_AGENT_DEVICE_ID": message.device_id,
            "DEVICE_AGENT_TOPIC": message.topic,
            "DEVICE_AGENT_MESSAGE_ID": message.message_id or "",
            "DEVICE_AGENT_MESSAGE_NAME": message.name or "",
            "DEVICE_AGENT_MESSAGE_FORMAT": message.format,
        }
        try:
            outcome = await run_process(
                handler.argv,
                stdin=message.content,
                env=env,
                timeout_s=handler.timeout_s or self.commands.default_timeout_s,
                kill_grace_s=self.commands.kill_grace_s,
                max_output_bytes=self.commands.max_output_bytes,
                allowed_dirs=self.commands.allowed_dirs,
            )
        except ExecutionError as exc:
            return False, {"error": exc.reason}
        if outcome.timed_out:
            return False, {"error": "handler timeout"}
        if outcome.exit_code != 0:
            return False, {"error": f"handler exited with {outcome.exit_code}"}
        return True, {"handled": True}

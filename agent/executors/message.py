"""Down-link messages: written to a spool directory (atomically) and/or handed to a handler.

Spool layout: for each message ``{stem}.bin`` holds the content exactly as received and
``{stem}.json`` describes it. The ``.json`` file is written last, so a consumer that watches
for ``*.json`` never sees a message whose content is not complete. Stems start with the receive
time, so sorting names gives arrival order; they end with a digest of the subtask key, so
writing the same message again (after a crash) replaces it instead of adding a second copy.

The spool is bounded (``spool_max_messages``, ``spool_max_bytes``): a message that would not
fit is refused - the subtask fails with ``spool full``, ``message.spool.full`` is logged - and
nothing already in the spool is ever deleted by the agent; consumers make room by taking
messages out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import threading
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


_locks: dict[str, threading.Lock] = {}


class SpoolFull(Exception):
    """The spool has no room for another message."""


def _usage(directory: Path) -> tuple[int, int]:
    """(messages, bytes) in the spool: described messages, and every file's size."""
    messages = size = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False):
                    size += entry.stat(follow_symlinks=False).st_size
                    messages += entry.name.endswith(".json")
    return messages, size


def spool_message(
    directory: Path,
    message: MessageDelivery,
    received_at: float,
    *,
    max_messages: int | None = None,
    max_bytes: int | None = None,
) -> Path:
    """Write one message into the spool; returns the path of its description.

    Raises:
        SpoolFull: the spool holds ``max_messages`` messages or this one would take it past
            ``max_bytes`` (a message already there, written again after a crash, always fits).
    """
    directory.mkdir(parents=True, exist_ok=True)
    # Messages are spooled concurrently: the room is checked and taken in one step.
    with _locks.setdefault(str(directory), threading.Lock()):
        return _spool(directory, message, received_at, max_messages, max_bytes)


def _spool(
    directory: Path,
    message: MessageDelivery,
    received_at: float,
    max_messages: int | None,
    max_bytes: int | None,
) -> Path:
    stem = spool_stem(message, received_at)
    if not (directory / f"{stem}.json").exists() and (max_messages or max_bytes):
        count, size = _usage(directory)
        if max_messages is not None and count >= max_messages:
            msg = f"spool full: {count} messages waiting (messages.spool_max_messages)"
            raise SpoolFull(msg)
        if max_bytes is not None and size + len(message.content) + 1024 > max_bytes:
            msg = f"spool full: {size} bytes waiting (messages.spool_max_bytes)"
            raise SpoolFull(msg)
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
        self.reconfigure(settings, commands)

    def reconfigure(self, settings: MessageSettings, commands: CommandSettings) -> None:
        """Take a new spool directory, handler and bounds (a reload)."""
        self.settings = settings
        self.commands = commands

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        """Spool the message and run the message handler, as configured."""
        assert isinstance(subtask, MessageDelivery)  # noqa: S101 - the dispatcher routes by kind
        summary: dict[str, Any] = {"size": len(subtask.content), "format": subtask.format}
        if self.settings.spool_dir is not None:
            try:
                path = await asyncio.to_thread(
                    functools.partial(
                        spool_message,
                        self.settings.spool_dir,
                        subtask,
                        ctx.received_at,
                        max_messages=self.settings.spool_max_messages,
                        max_bytes=self.settings.spool_max_bytes,
                    )
                )
            except SpoolFull as exc:
                ctx.log.error("message.spool.full", reason=str(exc), topic=subtask.topic)
                return Outcome(ok=False, summary={**summary, "error": str(exc)})
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

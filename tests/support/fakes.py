"""In-process stand-ins for component tests: a transport, a journal wrapper, executors, a log.

They record what the agent did (acknowledgements, publications, log lines) and let a test decide
when things happen (publications settle, journal writes complete, executions finish), so the
agent's ordering rules can be checked without a broker or a clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.core.errors import JournalError, TransportError
from agent.core.model import (
    CommandRequest,
    CommandResponse,
    CommandResult,
    Publish,
    ResultCode,
    Subtask,
)
from agent.journal.base import Accepted, Finish, Journal, OpenSubtask, OutboxItem, SubtaskState
from agent.pipeline.executor import Context, Outcome
from agent.transport.base import InboundMessage


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Let the loop run until ``predicate`` holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.002)


def inbound(
    topic: str, payload: bytes, mid: int, *, dup: bool = False, qos: int = 1, session: int = 1
) -> InboundMessage:
    """A received publication as the transport hands it on."""
    return InboundMessage(topic, payload, qos, dup, mid, session)


# ---------------------------------------------------------------------------------------------


@dataclass
class SentPublish:
    """One publication handed to the fake transport, with the future the outbox waits on."""

    topic: str
    payload: bytes
    qos: int
    future: asyncio.Future[None]


class FakeTransport:
    """A :class:`~agent.transport.base.Transport` that records instead of talking MQTT.

    With ``auto_ack`` every publication is acknowledged at once; otherwise the test settles the
    futures with :meth:`puback` / :meth:`disconnect`.
    """

    def __init__(self, *, connected: bool = True, auto_ack: bool = True) -> None:
        self.ready = asyncio.Event()
        if connected:
            self.ready.set()
        self.auto_ack = auto_ack
        self.acked: list[InboundMessage] = []
        self.sent: list[SentPublish] = []
        self.publish_error: Exception | None = None  # raised into the next publications

    def publish(self, topic: str, payload: bytes, qos: int) -> asyncio.Future[None]:
        """Record a publication; settle it now (auto_ack, error, not connected) or later."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append(SentPublish(topic, payload, qos, future))
        if not self.ready.is_set():
            future.set_exception(TransportError("not connected"))
        elif self.publish_error is not None:
            future.set_exception(self.publish_error)
        elif self.auto_ack:
            future.set_result(None)
        return future

    def ack(self, message: InboundMessage) -> None:
        """Record a PUBACK."""
        self.acked.append(message)

    async def run(self) -> None:
        """Nothing to drive."""
        await asyncio.Event().wait()

    async def close(self) -> None:
        """Nothing to close."""
        self.ready.clear()

    # -- test controls ----------------------------------------------------------------------

    def unsettled(self) -> list[SentPublish]:
        """Publications the broker has not acknowledged yet."""
        return [p for p in self.sent if not p.future.done()]

    def puback(self, count: int | None = None) -> int:
        """Acknowledge the oldest ``count`` unsettled publications (all by default)."""
        pending = self.unsettled()[:count]
        for item in pending:
            item.future.set_result(None)
        return len(pending)

    def disconnect(self) -> None:
        """Lose the connection: every unsettled publication fails."""
        self.ready.clear()
        for item in self.unsettled():
            item.future.set_exception(TransportError("connection lost"))
            item.future.exception()  # retrieved, as the real transport does

    def reconnect(self) -> None:
        """The connection is back."""
        self.ready.set()

    def payloads(self, topic_part: str = "") -> list[bytes]:
        """Payloads sent on topics containing ``topic_part``, in order."""
        return [p.payload for p in self.sent if topic_part in p.topic]


# ---------------------------------------------------------------------------------------------


class ControlledJournal:
    """Wraps a journal so a test can hold back or fail individual ``accept`` calls by key.

    ``hold(key)`` makes the accept of ``key`` wait until ``release(key)``; ``fail(key)`` makes it
    raise :class:`~agent.core.errors.JournalError`. Everything else passes straight through.
    """

    def __init__(self, inner: Journal) -> None:
        self.inner = inner
        self._gates: dict[str, asyncio.Event] = {}
        self._failing: set[str] = set()
        self.entered_keys: list[str] = []  # accept called (perhaps still held)
        self.accepted_keys: list[str] = []  # accept returned

    def hold(self, key_part: str) -> None:
        """Make accepts whose key contains ``key_part`` wait."""
        self._gates[key_part] = asyncio.Event()

    def release(self, key_part: str) -> None:
        """Let held accepts through."""
        self._gates[key_part].set()

    def fail(self, key_part: str) -> None:
        """Make accepts whose key contains ``key_part`` fail."""
        self._failing.add(key_part)

    def heal(self) -> None:
        """Stop failing accepts."""
        self._failing.clear()

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
        """Pass through, after any gate for the key, unless it is marked to fail."""
        self.entered_keys.append(key)
        for part, gate in self._gates.items():
            if part in key:
                await gate.wait()
        if any(part in key for part in self._failing):
            raise JournalError(f"disk full while accepting {key}")
        accepted = await self.inner.accept(
            agent_id,
            key=key,
            device_id=device_id,
            kind=kind,
            request=request,
            now=now,
            state=state,
            finish=finish,
            retry_failed=retry_failed,
        )
        self.accepted_keys.append(key)
        return accepted

    async def record_state(self, key: str, state: str, detail: dict[str, Any], now: float) -> None:
        """Pass through."""
        await self.inner.record_state(key, state, detail, now)

    async def finish(self, agent_id: str, key: str, finish: Finish, now: float) -> list[OutboxItem]:
        """Pass through."""
        return await self.inner.finish(agent_id, key, finish, now)

    async def enqueue(
        self, agent_id: str, publishes: list[Publish], now: float
    ) -> list[OutboxItem]:
        """Pass through."""
        return await self.inner.enqueue(agent_id, publishes, now)

    async def open_subtasks(self, agent_id: str) -> list[OpenSubtask]:
        """Pass through."""
        return await self.inner.open_subtasks(agent_id)

    async def pending(self, agent_id: str, after_id: int, limit: int) -> list[OutboxItem]:
        """Pass through."""
        return await self.inner.pending(agent_id, after_id, limit)

    async def delivered(self, ids: list[int]) -> None:
        """Pass through."""
        await self.inner.delivered(ids)

    async def get_value(self, agent_id: str, name: str) -> str | None:
        """Pass through."""
        return await self.inner.get_value(agent_id, name)

    async def set_value(self, agent_id: str, name: str, value: str) -> None:
        """Pass through."""
        await self.inner.set_value(agent_id, name, value)

    async def prune(self, finished_before: float) -> int:
        """Pass through."""
        return await self.inner.prune(finished_before)

    async def ping(self) -> None:
        """Pass through."""
        await self.inner.ping()

    async def close(self) -> None:
        """Pass through."""
        await self.inner.close()


# ---------------------------------------------------------------------------------------------


@dataclass
class Execution:
    """One call of a scripted executor."""

    key: str
    received_at: float
    subtask: Subtask
    started: asyncio.Event = field(default_factory=asyncio.Event)


class ScriptedExecutor:
    """An executor whose executions the test releases; it answers commands with success.

    ``hold_all`` makes every execution wait for :meth:`release`; executions are recorded in
    order, and so are recoveries.
    """

    def __init__(self, *, hold_all: bool = False, crash: Exception | None = None) -> None:
        self.crash = crash  # raised from every execution, as a buggy executor would
        self.succeed = True  # False: every execution ends failed
        self.executions: list[Execution] = []
        self.recoveries: list[tuple[str, str]] = []
        self.cancelled: list[str] = []
        self._hold_all = hold_all
        self._gates: dict[str, asyncio.Event] = {}

    def release(self, key_part: str = "") -> None:
        """Let waiting executions whose key contains ``key_part`` finish."""
        for key, gate in self._gates.items():
            if key_part in key:
                gate.set()

    def keys(self) -> list[str]:
        """Keys executed so far, in order."""
        return [e.key for e in self.executions]

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        """Record the call, wait if held, answer."""
        execution = Execution(subtask.key, ctx.received_at, subtask)
        self.executions.append(execution)
        execution.started.set()
        if self.crash is not None:
            raise self.crash
        if self._hold_all:
            gate = self._gates.setdefault(subtask.key, asyncio.Event())
            try:
                await gate.wait()
            except asyncio.CancelledError:
                self.cancelled.append(subtask.key)
                raise
        if not self.succeed:
            return _answer(subtask, ResultCode.HANDLER_FAILED, "failed")
        return _answer(subtask, ResultCode.SUCCESS, "done")

    async def recover(self, subtask: Subtask, state: str, ctx: Context) -> Outcome:
        """Record the call and report the subtask as interrupted."""
        self.recoveries.append((subtask.key, state))
        return _answer(subtask, ResultCode.INTERRUPTED, "interrupted")


def _answer(subtask: Subtask, code: int, error: str) -> Outcome:
    if not isinstance(subtask, CommandRequest):
        return Outcome(ok=code == ResultCode.SUCCESS, summary={"result": error})
    result = (
        CommandResult(result_code=code, response_name="DONE")
        if code == ResultCode.SUCCESS
        else CommandResult.failure(code, error)
    )
    reply = CommandResponse(
        device_id=subtask.device_id, correlation=subtask.correlation, result=result
    )
    return Outcome(ok=result.ok, summary={"result_code": code}, replies=[reply])


# ---------------------------------------------------------------------------------------------


class LogRecorder:
    """A stand-in for a bound structlog logger that keeps every line as a dict."""

    def __init__(
        self, lines: list[dict[str, Any]] | None = None, context: dict[str, Any] | None = None
    ) -> None:
        self.lines: list[dict[str, Any]] = [] if lines is None else lines
        self._context = context or {}

    def bind(self, **context: Any) -> LogRecorder:
        """A logger adding ``context`` to every line, recording into the same list."""
        return LogRecorder(self.lines, {**self._context, **context})

    def _log(self, level: str, event: str, **fields: Any) -> None:
        self.lines.append({"level": level, "event": event, **self._context, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        """Record a debug line."""
        self._log("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        """Record an info line."""
        self._log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Record a warning."""
        self._log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        """Record an error."""
        self._log("error", event, **fields)

    def critical(self, event: str, **fields: Any) -> None:
        """Record a critical line."""
        self._log("critical", event, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Record an error with the exception being handled."""
        self._log("exception", event, **fields)

    def events(self, name: str) -> list[dict[str, Any]]:
        """Lines with event ``name``."""
        return [line for line in self.lines if line["event"] == name]


def context(received_at: float = 1_700_000_000.0, log: LogRecorder | None = None) -> Context:
    """An executor context wired to in-memory parts (journal, outbox, fake transport)."""
    from agent.journal.memory import MemoryJournal
    from agent.pipeline.outbox import Outbox
    from agent.pipeline.uplink import Uplink
    from agent.profiles.huawei_iotda import HuaweiIotdaProfile

    log = log or LogRecorder()
    journal = MemoryJournal()
    transport = FakeTransport()
    outbox = Outbox("dev-1", journal, transport, log=log)
    uplink = Uplink(
        agent_id="dev-1",
        profile=HuaweiIotdaProfile("dev-1"),
        journal=journal,
        outbox=outbox,
        transport=transport,
        log=log,
    )
    return Context(agent_id="dev-1", received_at=received_at, log=log, uplink=uplink)

"""The dispatcher: received publications become journaled subtasks, executed once, answered.

For every publication, in the order received:
  1. the profile decodes it (pure; a bad one becomes a journaled failure answer where the
     protocol has a place for one, and a log line saying what was wrong, in every case);
  2. the journal records it under its key: a key seen before is not executed again (a finished
     one has its stored answer sent again);
  3. only then is it acknowledged to the broker (PUBACKs leave in the order messages came);
  4. a new subtask runs in the background, bounded by ``max_concurrent_subtasks``;
  5. its end and its answers are journaled in one transaction and handed to the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import TypeAdapter

from agent.core.errors import JournalError, RemoteProtocolError
from agent.core.model import Batch, Ignored, Outbound, Subtask
from agent.journal.base import Accepted, AcceptOutcome, Finish, Journal, SubtaskState
from agent.pipeline.executor import Context, Executor, Outcome
from agent.pipeline.outbox import Outbox
from agent.pipeline.uplink import Uplink
from agent.profiles.base import Profile
from agent.runtime import failpoints
from agent.transport.base import InboundMessage

SUBTASK: TypeAdapter[Subtask] = TypeAdapter(Subtask)
# A subtask that got a slot at once is journaled as running: after a crash it is not re-run.
RUNNING = "running"


class Dispatcher:
    """Receives one connection's publications and sees each subtask through to its answer."""

    def __init__(
        self,
        *,
        agent_id: str,
        profile: Profile,
        journal: Journal,
        outbox: Outbox,
        executors: dict[str, Executor],
        uplink: Uplink,
        ack: Callable[[InboundMessage], None],
        max_concurrent: int,
        log: Any,
        clock: Callable[[], float] = time.time,
        kind_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.agent_id = agent_id
        self._profile = profile
        self._journal = journal
        self._outbox = outbox
        self._executors = executors
        self._uplink = uplink
        self._ack = ack
        self._slots = asyncio.Semaphore(max_concurrent)
        # Long-running kinds (upgrades) get pools of their own so they never starve commands.
        self._kind_slots = {kind: asyncio.Semaphore(n) for kind, n in (kind_limits or {}).items()}
        self._log = log
        self._clock = clock
        # The latest publication being admitted: each waits for its predecessor before its
        # PUBACK, so acknowledgements leave in arrival order without a queue or a task of
        # their own (a simulated fleet has thousands of dispatchers).
        self._last_admit: asyncio.Task[None] | None = None
        self._acking = True
        self._running: set[asyncio.Task[None]] = set()
        # Every admission under way (each is also chained through ``_last_admit``): an abort
        # waits for them, since one may journal and start a subtask.
        self._admitting: set[asyncio.Task[None]] = set()
        self._accepting = True
        self._aborted = False

    # -- intake ---------------------------------------------------------------------------

    def receive(self, message: InboundMessage) -> None:
        """Take a publication from the transport (called on the loop, must not block)."""
        if self._accepting:
            previous = self._last_admit
            task = asyncio.get_running_loop().create_task(self._admit_in_order(message, previous))
            self._last_admit = task
            self._admitting.add(task)
            task.add_done_callback(self._admitted)
            return
        # When stopping, the message is left unacknowledged: the broker keeps it for next time.
        self._log.info("message.deferred", topic=message.topic, reason="stopping")

    def _admitted(self, task: asyncio.Task[None]) -> None:
        self._admitting.discard(task)
        if self._last_admit is task:
            self._last_admit = None  # an idle dispatcher holds no finished task

    async def run(self) -> None:
        """Acknowledge admitted publications until cancelled (they are admitted on arrival)."""
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self._acking = False

    async def _admit_in_order(
        self, message: InboundMessage, previous: asyncio.Task[None] | None
    ) -> None:
        """Admit one publication, then PUBACK it once every earlier one has had its turn."""
        try:
            admitted = await self._admit(message)
        except Exception:
            # Left unacknowledged: the broker redelivers it on the next connection.
            self._log.exception("message.admit.crashed", topic=message.topic)
            admitted = False
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        if admitted and self._acking:
            self._ack(message)

    async def _admit(self, message: InboundMessage) -> bool:
        """Decode and journal one publication; True when it may be acknowledged."""
        try:
            event = self._profile.decode(message.topic, message.payload)
        except RemoteProtocolError as exc:
            return await self._reject(message, exc)
        except Exception:  # a decoder bug must not take the daemon down with it
            self._log.exception("message.decode.crashed", topic=message.topic)
            return True
        if isinstance(event, Ignored):
            self._log.info("message.ignored", topic=message.topic, reason=event.reason)
            return True
        try:
            for subtask in event.items if isinstance(event, Batch) else [event]:
                await self._accept(subtask, message)
        except JournalError as exc:
            # Not acknowledged: the broker redelivers it on the next connection.
            self._log.error("journal.accept.failed", topic=message.topic, error=str(exc))
            return False
        return True

    async def _accept(self, subtask: Subtask, message: InboundMessage) -> None:
        received_at = self._clock()
        content_keyed = getattr(subtask, "dedupe", "id") == "content"
        if content_keyed:
            # A broker redelivery (DUP) reuses the original packet id, so ``hash/packet-id``
            # finds the first delivery of a message that has no id of its own.
            subtask = subtask.model_copy(update={"key": f"{subtask.key}/{message.mid}"})
        # Work named by its content may be asked for again after it failed; a broker
        # redelivery (DUP) of the first push is the same request, not a new one.
        retry_failed = getattr(subtask, "dedupe", "id") == "work" and not message.dup
        accepted, holding_slot = await self._journal_new(subtask, received_at, retry_failed)
        if accepted.outcome is not AcceptOutcome.NEW and content_keyed and not message.dup:
            # The same content again, not a redelivery: a message of its own.
            subtask = subtask.model_copy(update={"key": f"{subtask.key}/{uuid.uuid4().hex}"})
            accepted, holding_slot = await self._journal_new(subtask, received_at)
        if accepted.outcome is AcceptOutcome.NEW:
            failpoints.hit("dispatcher.after_accept")
            self._start(subtask, received_at, holding_slot=holding_slot)
            return
        self._log.info(
            "subtask.duplicate",
            key=subtask.key,
            kind=subtask.kind,
            state=accepted.state,
            answered_again=len(accepted.requeued),
        )
        self._outbox.submit(accepted.requeued)

    async def _journal_new(
        self, subtask: Subtask, received_at: float, retry_failed: bool = False
    ) -> tuple[Accepted, bool]:
        """Journal a subtask, taking an execution slot if one is free.

        With a slot, it is journaled as running in the same transaction (one fsync); without,
        it is journaled as waiting and records "running" when it gets one. It is journaled with
        the receive time its executor is given, so a recovery sees the same one (spool names).
        """
        slots = self._slots_for(subtask.kind)
        holding_slot = not slots.locked()
        if holding_slot:
            await slots.acquire()  # free: returns at once
        try:
            accepted = await self._journal.accept(
                self.agent_id,
                key=subtask.key,
                device_id=subtask.device_id,
                kind=subtask.kind,
                request=SUBTASK.dump_json(subtask).decode(),
                now=received_at,
                state=RUNNING if holding_slot else SubtaskState.ACCEPTED,
                retry_failed=retry_failed,
            )
        except BaseException:
            if holding_slot:
                slots.release()
            raise
        if holding_slot and accepted.outcome is not AcceptOutcome.NEW:
            slots.release()
            holding_slot = False
        return accepted, holding_slot

    def _slots_for(self, kind: str) -> asyncio.Semaphore:
        return self._kind_slots.get(kind, self._slots)

    async def _reject(self, message: InboundMessage, exc: RemoteProtocolError) -> bool:
        self._log.warning(
            "message.rejected",
            topic=message.topic,
            reason=exc.reason,
            size=len(message.payload),
            answered=exc.reply is not None,
        )
        if exc.reply is None or exc.key is None:
            return True
        reply: Outbound = exc.reply  # type: ignore[assignment]
        finish = Finish(
            state=SubtaskState.FAILED,
            result={"error": "bad_request", "reason": exc.reason},
            publishes=self._profile.encode(reply),
        )
        try:
            accepted = await self._journal.accept(
                self.agent_id,
                key=exc.key,
                device_id=reply.device_id,
                kind="rejected",
                request=json.dumps({"reason": exc.reason}),
                now=self._clock(),
                finish=finish,
            )
        except JournalError as error:
            self._log.error("journal.accept.failed", topic=message.topic, error=str(error))
            return False
        self._outbox.submit(accepted.requeued)
        return True

    # -- execution ------------------------------------------------------------------------

    def _start(self, subtask: Subtask, received_at: float, *, holding_slot: bool) -> None:
        task = asyncio.get_running_loop().create_task(
            self._execute(subtask, received_at, holding_slot), name=f"subtask {subtask.key}"
        )
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _context(self, subtask: Subtask, received_at: float) -> Context:
        return Context(
            agent_id=self.agent_id,
            received_at=received_at,
            log=self._log.bind(key=subtask.key, device_id=subtask.device_id),
            uplink=self._uplink,
        )

    async def _execute(self, subtask: Subtask, received_at: float, holding_slot: bool) -> None:
        ctx = self._context(subtask, received_at)
        slots = self._slots_for(subtask.kind)
        if not holding_slot:
            # Cancelled while waiting, the subtask stays "accepted": the next start runs it.
            await slots.acquire()
        try:
            if not holding_slot:
                await self._journal.record_state(subtask.key, RUNNING, {}, self._clock())
            executor = self._executors[subtask.kind]
            try:
                outcome = await executor.execute(subtask, ctx)
            except asyncio.CancelledError:
                if self._aborted or getattr(executor, "resumable", False):
                    raise  # its journaled state is resumed (or recovered) by the next start
                # Stopping: close the subtask as interrupted rather than leave it dangling.
                await self._finish(
                    subtask, await executor.recover(subtask, RUNNING, ctx), received_at, ctx
                )
                raise
            except Exception as exc:
                ctx.log.exception("subtask.crashed", kind=subtask.kind)
                crashed = await executor.recover(subtask, RUNNING, ctx)
                outcome = Outcome(
                    crashed.ok, {**crashed.summary, "crash": repr(exc)}, crashed.replies
                )
            await self._finish(subtask, outcome, received_at, ctx)
        except JournalError as exc:
            ctx.log.error("journal.write.failed", error=str(exc))
        finally:
            slots.release()

    async def _finish(
        self, subtask: Subtask, outcome: Outcome, received_at: float, ctx: Context
    ) -> None:
        publishes = [p for reply in outcome.replies for p in self._profile.encode(reply)]
        now = self._clock()
        items = await self._journal.finish(
            self.agent_id, subtask.key, Finish(outcome.state, outcome.summary, publishes), now
        )
        failpoints.hit("dispatcher.after_finish")
        self._outbox.submit(items)
        ctx.log.info(
            "subtask.finished",
            kind=subtask.kind,
            state=outcome.state,
            duration_ms=round((now - received_at) * 1000, 1),
            **outcome.summary,
        )

    # -- restart and shutdown -------------------------------------------------------------

    async def recover(self) -> int:
        """Resume or close the subtasks a previous run left open; returns how many."""
        open_subtasks = await self._journal.open_subtasks(self.agent_id)
        for row in open_subtasks:
            subtask = SUBTASK.validate_json(row.request)
            if row.state == SubtaskState.ACCEPTED:
                # Journaled but never started: safe to run now.
                self._start(subtask, row.received_at, holding_slot=False)
                continue
            executor = self._executors[subtask.kind]
            if getattr(executor, "resumable", False):
                # Long work resumes in the background: the agent connects meanwhile.
                self._track(self._resume(subtask, row.state, row.received_at), subtask.key)
                continue
            ctx = self._context(subtask, row.received_at)
            try:
                outcome = await executor.recover(subtask, row.state, ctx)
                await self._finish(subtask, outcome, row.received_at, ctx)
            except JournalError as exc:
                # Left open (or ended meanwhile by the run being replaced): the others still
                # recover and the agent still starts; an open one is met again next start.
                ctx.log.error("journal.write.failed", error=str(exc))
        return len(open_subtasks)

    async def _resume(self, subtask: Subtask, state: str, received_at: float) -> None:
        ctx = self._context(subtask, received_at)
        try:
            outcome = await self._executors[subtask.kind].recover(subtask, state, ctx)
            await self._finish(subtask, outcome, received_at, ctx)
        except JournalError as exc:
            ctx.log.error("journal.write.failed", error=str(exc))

    def _track(self, coro: Any, key: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"subtask {key}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    @property
    def in_flight(self) -> int:
        """Subtasks running or waiting for a slot."""
        return len(self._running)

    def stop_intake(self) -> None:
        """Take no new publications (they stay unacknowledged at the broker)."""
        self._accepting = False

    async def drain(self, grace: float) -> None:
        """Let running subtasks finish for up to ``grace`` seconds, then interrupt the rest.

        Subtasks that were already being admitted when intake stopped join the wait.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while (busy := self._admitting | self._running) and (
            remaining := deadline - loop.time()
        ) > 0:
            await asyncio.wait(busy, timeout=remaining)
        for task in list(self._admitting | self._running):
            task.cancel()
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._running, return_exceptions=True), 10.0)

    async def abort(self) -> None:
        """Stop at once, as the process dying would; return when none of this run's work runs.

        Admissions under way and subtasks are cancelled (nothing is acknowledged, nothing is
        closed as interrupted: the next start recovers what the journal holds open), and all of
        them are waited for, without a time bound: an agent started afterwards on the same
        journal must never meet a task of this one still executing or finishing a subtask.
        """
        self._accepting = False
        self._acking = False
        self._aborted = True
        while pending := self._admitting | self._running:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

"""The task engine: schedules subtasks, dispatches them, applies deadlines, retries and stop.

Every state change goes through :meth:`TaskEngine._move`, which keeps each task's counters in
step with its subtasks, so ``task_progress`` adds up at every moment. One pump task does the
timed work (schedule times, retry waits, deadlines) and dispatches at most ``max_in_flight``
attempts at a time; answers from the MQTT link end attempts as they arrive.

Long: every subtask state change goes through one method here, so the counters stay exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any

from agent.core.errors import LocalProtocolError
from agent.core.model import Publish
from agent.sim.emulator import records as r
from agent.sim.emulator.dispatch import (
    Answer,
    Conversation,
    DeviceOffline,
    LocalContext,
    LocalDispatcher,
    MqttDispatcher,
    Report,
    Step,
    Unavailable,
    Verdict,
)
from agent.sim.emulator.dispatchers import DispatcherTable
from agent.sim.emulator.link import PlatformLink
from agent.sim.emulator.presence import Presence
from agent.sim.emulator.registry import Registry
from agent.sim.emulator.store import EmulatorStore

TIMEOUT = "TIMEOUT"
# A subtask whose device is busy with another task's conversation (two upgrades at once) waits.
BUSY_WAIT_S = 1.0
# What an offline device means for a task type (a dispatcher's ``when_offline``): the attempt
# fails as the platform's does (``IOTDA.014016``, "the device is not online"), or it waits for
# the device to come online (an upgrade: up to 25 hours, usermanual iot_01_0047).
FAIL_OFFLINE = "fail"
WAIT_ONLINE = "wait"
NOT_ONLINE = "IOTDA.014016"
SubtaskObserver = Callable[[r.Task, r.Subtask], None]


class TaskEngine:
    """Runs every task of one emulator."""

    def __init__(
        self,
        store: EmulatorStore,
        registry: Registry,
        table: DispatcherTable,
        *,
        max_in_flight: int,
        flush_interval_s: float,
        log: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self.table = table
        self.link: PlatformLink | None = None
        self.max_in_flight = max_in_flight
        self.flush_interval_s = flush_interval_s
        self.log = log
        self.clock = clock
        self.tasks: dict[str, r.Task] = {}
        self.subtasks: dict[str, list[r.Subtask]] = {}
        self.observers: list[SubtaskObserver] = []
        self.late_answers = 0
        self._inflight: dict[str, r.Subtask] = {}  # correlation -> subtask
        self._sent_at: dict[str, float] = {}  # correlation -> when its downlink last went out
        self._next_nudge = 0.0
        self._due: list[tuple[float, int, r.Subtask]] = []
        self._deadlines: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._open: set[str] = set()  # tasks with subtasks not yet ended
        self._dirty_tasks: set[str] = set()
        self._dirty: dict[tuple[str, int], r.Subtask] = {}
        self._wake = asyncio.Event()
        self._runners: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        # Who is online (None: everyone, the lenient emulator), and how long an attempt that
        # waits for its device to come online may wait.
        self.presence: Presence | None = None
        self.online_timeout_s = 90000.0
        self._awaiting_online: dict[str, dict[tuple[str, int], r.Subtask]] = {}

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what a previous run left, then start the pump and the write-behind."""
        now = self.clock()
        for task, subs in await self.store.load_tasks():
            self._index(task, subs)
            for sub in subs:
                if sub.state == r.PROCESSING:
                    self._resume(task, sub, now)
                elif sub.state in (r.WAITTING, r.FAIL_WAIT_RETRY):
                    if sub.deadline is not None:  # it waited for its device: look again now
                        sub.due = min(sub.due, now)
                    self._schedule(sub)
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._pump(), name="emulator.pump"),
            loop.create_task(self._flusher(), name="emulator.flush"),
        ]

    async def close(self) -> None:
        """Stop timers and write everything down."""
        for job in [*self._loops, *self._runners]:
            job.cancel()
        for job in [*self._loops, *self._runners]:
            with contextlib.suppress(asyncio.CancelledError):
                await job
        await self.flush()

    async def flush(self) -> None:
        """Write changed tasks and subtasks now."""
        tasks = [self.tasks[t] for t in self._dirty_tasks if t in self.tasks]
        subs = list(self._dirty.values())
        self._dirty_tasks.clear()
        self._dirty.clear()
        await self.store.save(tasks, subs)

    # -- the API's side -------------------------------------------------------------------

    async def create(self, task: r.Task, device_ids: list[str]) -> r.Task:
        """Persist a task with one subtask per target and schedule it."""
        subs = [
            r.Subtask(task_id=task.task_id, seq=i, device_id=d, due=task.schedule_at)
            for i, d in enumerate(device_ids)
        ]
        await self.store.create_task(task, subs)
        self._index(task, subs)
        for sub in subs:
            self._schedule(sub)
        self.log.info(
            "emulator.task.created",
            task_id=task.task_id,
            api=task.api,
            task_type=task.task_type,
            subtasks=len(subs),
            available=self.table.available(task.api, task.task_type),
        )
        return task

    def stop(self, task_id: str) -> r.Task:
        """Stop a task: waiting subtasks end as stopped; attempts in flight finish."""
        task = self.tasks[task_id]
        if task.finished_at is not None or task.stop_requested:
            return task
        task.stop_requested = True
        for sub in self.subtasks[task_id]:
            if sub.state in (r.WAITTING, r.FAIL_WAIT_RETRY):
                self._move(task, sub, r.STOPPED)
        self._dirty_tasks.add(task_id)
        self._wake.set()
        return task

    def stop_subtasks(self, task_id: str, device_ids: list[str]) -> dict[str, str | None]:
        """Stop these targets' subtasks now, attempts in flight included (IoTDA StopBatchTask).

        Returns, per device, None when its subtask was stopped, else why not. An answer to a
        stopped attempt that still arrives is late and ignored.
        """
        task = self.tasks[task_id]
        by_device = {sub.device_id: sub for sub in self.subtasks[task_id]}
        results: dict[str, str | None] = {}
        for device_id in device_ids:
            sub = by_device.get(device_id)
            if sub is None:
                results[device_id] = "the device is not a target of this task"
            elif sub.state in r.TERMINAL:
                results[device_id] = f"the subtask has already ended ({sub.state})"
            else:
                self._drop_attempt(sub)
                self._move(task, sub, r.STOPPED)
                results[device_id] = None
        self._dirty_tasks.add(task_id)
        return results

    def retry_subtasks(self, task_id: str, device_ids: list[str]) -> dict[str, str | None]:
        """Run these targets' failed or stopped subtasks again (IoTDA RetryBatchTask)."""
        task = self.tasks[task_id]
        by_device = {sub.device_id: sub for sub in self.subtasks[task_id]}
        results: dict[str, str | None] = {}
        now = self.clock()
        for device_id in device_ids:
            sub = by_device.get(device_id)
            if sub is None:
                results[device_id] = "the device is not a target of this task"
                continue
            if sub.state not in (r.FAIL, r.STOPPED, r.FAIL_WAIT_RETRY):
                results[device_id] = f"only failed or stopped subtasks are retried ({sub.state})"
                continue
            sub.error_code = sub.error_msg = sub.output = sub.stage = None
            sub.finished_at = None
            sub.progress = 0
            sub.due = now
            self._move(task, sub, r.WAITTING)
            self._schedule(sub)
            results[device_id] = None
        if any(result is None for result in results.values()):
            task.stop_requested = False
            task.finished_at = None
            self._open.add(task_id)
        self._dirty_tasks.add(task_id)
        return results

    def _drop_attempt(self, sub: r.Subtask) -> None:
        if sub.correlation is not None:
            self._inflight.pop(sub.correlation, None)
            self._sent_at.pop(sub.correlation, None)
            sub.correlation = None
            self._wake.set()  # a slot is free
        sub.deadline = None

    async def delete(self, task_id: str) -> None:
        """Forget a finished task."""
        await self.store.delete_task(task_id)
        self.tasks.pop(task_id, None)
        self.subtasks.pop(task_id, None)

    def open_tasks(self, api: str, account: str) -> list[r.Task]:
        """Tasks of an account that have not finished (waiting, processing or stopping)."""
        return [
            self.tasks[t]
            for t in self._open
            if self.tasks[t].api == api and self.tasks[t].account == account
        ]

    def status(self, task: r.Task) -> str:
        """A task's status now."""
        return task.status(self.clock())

    # -- answers from devices -------------------------------------------------------------

    def on_answer(self, answer: Answer | Report) -> None:
        """An answer read by the link: it ends the attempt it names (a report may move it on)."""
        sub = self._inflight.get(answer.correlation)
        if isinstance(answer, Report):
            # Reports nobody waits for are normal: versions reported after every connect.
            if sub is not None:
                self._interpret(sub, answer)
            return
        if sub is None:
            self.late_answers += 1
            self.log.debug("emulator.answer.unmatched", correlation=answer.correlation)
            return
        self._conclude(sub, answer.verdict)

    def _interpret(self, sub: r.Subtask, report: Report) -> None:
        task = self.tasks[sub.task_id]
        dispatcher = self.table.get(task.api, task.task_type)
        if not isinstance(dispatcher, Conversation):
            return
        try:
            result = dispatcher.interpret(task, sub, report)
        except (KeyError, TypeError, ValueError) as exc:
            result = Verdict.failed("INTERNAL", f"cannot read the report: {exc}")
        if isinstance(result, Step):
            self._advance(dispatcher, task, sub, result)
        elif result is not None:
            self._conclude(sub, result)

    def _advance(self, dispatcher: Conversation, task: r.Task, sub: r.Subtask, step: Step) -> None:
        """A multi-step attempt made progress, or goes on to its next stage (sent at once)."""
        if step.progress is not None and step.progress != sub.progress:
            sub.progress = step.progress
            self._dirty[sub.key] = sub
        if step.stage is None or step.stage == sub.stage or sub.correlation is None:
            return
        sub.stage = step.stage
        sub.deadline = self.clock() + self._timeout(dispatcher, task, sub)
        heapq.heappush(self._deadlines, (sub.deadline, next(self._order), sub.correlation))
        self._dirty[sub.key] = sub
        self._wake.set()
        device = self.registry.devices.get(sub.device_id)
        if device is None:
            self._conclude(sub, Verdict.failed("INTERNAL", "the device was deleted meanwhile"))
            return
        self._send(dispatcher, task, sub, device, sub.correlation)

    def _timeout(self, dispatcher: MqttDispatcher, task: r.Task, sub: r.Subtask) -> float:
        """How long the attempt (or its current stage) waits for the device."""
        if task.attempt_timeout_s:
            return task.attempt_timeout_s
        if isinstance(dispatcher, Conversation):
            return dispatcher.stage_timeout(task, sub)
        return dispatcher.timeout_s

    async def redeliver(self) -> None:
        """After the link (re)connects: send every attempt still in flight again.

        The request ids are unchanged, so a device that already has one answers it again from
        its journal instead of running it twice.
        """
        count = 0
        for correlation, sub in list(self._inflight.items()):
            task = self.tasks[sub.task_id]
            dispatcher = self.table.get(task.api, task.task_type)
            device = self.registry.devices.get(sub.device_id)
            if isinstance(dispatcher, MqttDispatcher) and device is not None:
                self._send(dispatcher, task, sub, device, correlation)
                count += 1
                if count % 500 == 0:
                    await asyncio.sleep(0)
        if count:
            self.log.info("emulator.redelivered", attempts=count)

    # -- the pump -------------------------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            now = self.clock()
            self._expire(now)
            await self._dispatch_due(now)
            self._nudge(now)
            delay = 0.5
            if self._due and len(self._inflight) < self.max_in_flight:
                delay = min(delay, self._due[0][0] - now)
            if self._deadlines:
                delay = min(delay, self._deadlines[0][0] - now)
            self._wake.clear()
            # Not wait_for: on Python 3.11 it swallows a cancel that arrives as the wake-up
            # does, and close() would wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(delay, 0.001)):
                    await self._wake.wait()

    def _nudge(self, now: float) -> None:
        """Send again attempts whose dispatcher asks for it (downlinks a broker may drop)."""
        if now < self._next_nudge:
            return
        self._next_nudge = now + 1.0
        for correlation, sub in list(self._inflight.items()):
            task = self.tasks[sub.task_id]
            dispatcher = self.table.get(task.api, task.task_type)
            every = getattr(dispatcher, "resend_every_s", None)
            device = self.registry.devices.get(sub.device_id)
            if not every or device is None or not isinstance(dispatcher, MqttDispatcher):
                continue
            if now - self._sent_at.get(correlation, 0.0) >= every:
                self._send(dispatcher, task, sub, device, correlation)

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.flush()

    def _expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, correlation = heapq.heappop(self._deadlines)
            sub = self._inflight.get(correlation)
            if sub is not None and sub.deadline is not None and sub.deadline <= now:
                task = self.tasks[sub.task_id]
                dispatcher = self.table.get(task.api, task.task_type)
                if isinstance(dispatcher, Conversation):
                    waited = self._timeout(dispatcher, task, sub)
                    message = dispatcher.timeout_message(sub, waited)
                else:
                    waited = round(sub.deadline - (sub.dispatched_at or sub.deadline), 1)
                    message = f"no answer within {waited} s"
                self._conclude(sub, Verdict.failed(TIMEOUT, message))
        for task_id in list(self._open):
            task = self.tasks[task_id]
            limit = task.max_execution_s
            if limit is None or now < task.schedule_at + limit:
                continue
            message = f"the task exceeded its maximum execution time ({limit:g} s)"
            for sub in self.subtasks[task_id]:
                if sub.state not in r.TERMINAL:
                    self._finish_now(task, sub, Verdict.failed(TIMEOUT, message))

    async def _dispatch_due(self, now: float) -> None:
        sent = 0
        while self._due and self._due[0][0] <= now and len(self._inflight) < self.max_in_flight:
            due, _, sub = heapq.heappop(self._due)
            if sub.state not in (r.WAITTING, r.FAIL_WAIT_RETRY) or sub.due != due:
                continue  # stopped, or rescheduled since
            self._dispatch(sub, now)
            sent += 1
            if sent % 200 == 0:
                await asyncio.sleep(0)  # let answers and the API in
                now = self.clock()

    def _dispatch(self, sub: r.Subtask, now: float) -> None:
        task = self.tasks[sub.task_id]
        dispatcher = self.table.get(task.api, task.task_type)
        if isinstance(dispatcher, Unavailable):
            sub.attempts += 1
            self._finish_now(task, sub, dispatcher.verdict())
            return
        device = self.registry.devices.get(sub.device_id)
        needs_device = not isinstance(dispatcher, LocalDispatcher) or dispatcher.needs_device
        if needs_device and device is None:
            sub.error_msg = "the device was deleted before the subtask ran"
            self._move(task, sub, r.REMOVED)
            return
        sub.attempts += 1
        if isinstance(dispatcher, LocalDispatcher):
            sub.dispatched_at = sub.dispatched_at or now
            self._move(task, sub, r.PROCESSING)
            job = asyncio.get_running_loop().create_task(self._run_local(dispatcher, task, sub))
            self._runners.add(job)
            job.add_done_callback(self._runners.discard)
            return
        assert device is not None  # noqa: S101 - needs_device holds for MQTT types
        if device.frozen:
            sub.dispatched_at = sub.dispatched_at or now
            self._finish_now(task, sub, Verdict.failed("IOTDA.014112", "the device is frozen"))
            return
        if not self._reachable(dispatcher, task, sub, device, now):
            return
        correlate = getattr(dispatcher, "correlate", None)
        custom = correlate(task, sub, device) if correlate is not None else None
        correlation = custom or f"{task.task_id}-{sub.seq}-{sub.attempts}"
        holder = self._inflight.get(correlation)
        if holder is not None and holder is not sub:
            # The device is in the middle of the same conversation for another task (its
            # answers could not tell the two apart): this one waits for it to end.
            sub.attempts -= 1
            sub.due = now + BUSY_WAIT_S
            self._schedule(sub)
            return
        sub.dispatched_at = sub.dispatched_at or now
        sub.correlation = correlation
        sub.stage = None
        sub.progress = 0
        sub.deadline = now + self._timeout(dispatcher, task, sub)
        self._inflight[correlation] = sub
        heapq.heappush(self._deadlines, (sub.deadline, next(self._order), correlation))
        self._move(task, sub, r.PROCESSING)
        self._send(dispatcher, task, sub, device, correlation)

    def _reachable(
        self, dispatcher: MqttDispatcher, task: r.Task, sub: r.Subtask, device: r.Device, now: float
    ) -> bool:
        """Whether the device is online; if not, the attempt fails or waits (as the type says)."""
        policy = getattr(dispatcher, "when_offline", None)
        if policy is None or self.presence is None or self.presence.online(device):
            self._awaiting_online.get(device.device_id, {}).pop(sub.key, None)
            return True
        if policy == FAIL_OFFLINE:
            sub.dispatched_at = sub.dispatched_at or now
            self._conclude(
                sub, Verdict.failed(NOT_ONLINE, f"the device {device.device_id} is not online")
            )
            return False
        sub.attempts -= 1  # waiting is not an attempt
        if sub.deadline is None:
            sub.deadline = now + self.online_timeout_s
        if now >= sub.deadline:
            sub.attempts += 1
            sub.dispatched_at = sub.dispatched_at or now
            waited = f"{self.online_timeout_s:g}"
            self._awaiting_online.get(device.device_id, {}).pop(sub.key, None)
            verdict = Verdict.failed(TIMEOUT, f"the device did not come online within {waited} s")
            self._finish_now(task, sub, verdict)
            return False
        self._awaiting_online.setdefault(device.device_id, {})[sub.key] = sub
        sub.due = sub.deadline
        self._dirty[sub.key] = sub
        self._schedule(sub)
        return False

    def awaiting_online(self, device_id: str) -> int:
        """How many subtasks wait for this device to come online."""
        return len(self._awaiting_online.get(device_id, {}))

    def came_online(self, device_id: str) -> None:
        """A device went ONLINE: attempts waiting for it are dispatched now."""
        waiting = self._awaiting_online.pop(device_id, {})
        now = self.clock()
        for sub in waiting.values():
            if sub.state in (r.WAITTING, r.FAIL_WAIT_RETRY):
                sub.due = now
                self._schedule(sub)

    def _send(
        self,
        dispatcher: MqttDispatcher,
        task: r.Task,
        sub: r.Subtask,
        device: r.Device,
        correlation: str,
    ) -> None:
        self._sent_at[correlation] = self.clock()
        try:
            publishes = dispatcher.downlinks(task, sub, device, correlation)
        except DeviceOffline as exc:
            if not exc.hold:
                self._conclude(sub, Verdict.failed(exc.code, exc.message))
            return
        except (KeyError, TypeError, ValueError) as exc:
            self._conclude(sub, Verdict.failed("INTERNAL", f"cannot build the downlink: {exc}"))
            return
        if not publishes and not dispatcher.fire_and_forget:
            self._conclude(sub, Verdict(ok=True, output={"already": "in the desired state"}))
            return
        for publish in publishes:
            future = self._publish(publish, task.task_id)
            future.add_done_callback(
                functools.partial(self._published, correlation, dispatcher.fire_and_forget)
            )

    def _publish(self, publish: Publish, task_id: str | None = None) -> asyncio.Future[None]:
        if self.link is None:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(ConnectionError("the emulator has no broker"))
            return future
        return self.link.publish(publish, task_id)

    def _published(
        self, correlation: str, fire_and_forget: bool, future: asyncio.Future[None]
    ) -> None:
        """The broker has the downlink (or it could not be sent)."""
        if future.cancelled():
            return
        error = future.exception()
        sub = self._inflight.get(correlation)
        if sub is None:
            return
        if isinstance(error, LocalProtocolError):
            # It can never be sent (a topic or size the client refuses): fail now, not at the
            # deadline, which for messages is a day away.
            self._conclude(sub, Verdict.failed("INTERNAL", error.reason))
        elif error is None and fire_and_forget:
            # Published: the broker accepted it. Whether the device got it is not known here.
            self._conclude(sub, Verdict(ok=True, output={"published": "broker accepted"}))
        # Otherwise the connection went away: redeliver() sends it again after reconnecting.

    async def _run_local(self, dispatcher: LocalDispatcher, task: r.Task, sub: r.Subtask) -> None:
        ctx = LocalContext(self.registry, self._publish_and_wait, self.clock())
        try:
            verdict = await dispatcher.run(task, sub, ctx)
        except Exception as exc:  # a registry bug must end the subtask, not hang it
            self.log.exception("emulator.local.crashed", task_id=task.task_id)
            verdict = Verdict.failed("INTERNAL", repr(exc))
        self._conclude(sub, verdict)

    async def _publish_and_wait(self, publish: Publish) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._publish(publish), 10)

    # -- state changes --------------------------------------------------------------------

    def _conclude(self, sub: r.Subtask, verdict: Verdict) -> None:
        """End an attempt: success, a retry after the interval, or failure."""
        if sub.state in r.TERMINAL:
            return
        if sub.correlation is not None:
            self._inflight.pop(sub.correlation, None)
            self._sent_at.pop(sub.correlation, None)
            sub.correlation = None
            self._wake.set()  # a slot is free
        task = self.tasks[sub.task_id]
        retry = (
            not verdict.ok
            and not task.stop_requested
            and sub.attempts <= task.retry_count
            and verdict.error_code != "INTERNAL"
        )
        if retry:
            sub.error_code, sub.error_msg, sub.output = (
                verdict.error_code,
                verdict.error_msg,
                verdict.output,
            )
            sub.deadline = None
            sub.due = self.clock() + task.retry_interval_s
            self._move(task, sub, r.FAIL_WAIT_RETRY)
            self._schedule(sub)
            return
        self._finish_now(task, sub, verdict)

    def _finish_now(self, task: r.Task, sub: r.Subtask, verdict: Verdict) -> None:
        if sub.correlation is not None:
            self._inflight.pop(sub.correlation, None)
            self._sent_at.pop(sub.correlation, None)
            sub.correlation = None
        sub.deadline = None
        sub.output = verdict.output
        if verdict.ok:
            sub.progress = 100
        sub.error_code = None if verdict.ok else verdict.error_code
        sub.error_msg = None if verdict.ok else verdict.error_msg
        self._move(task, sub, r.SUCCESS if verdict.ok else r.FAIL)

    def _move(self, task: r.Task, sub: r.Subtask, state: str) -> None:
        task.counts[sub.state] -= 1
        task.counts[state] += 1
        sub.state = state
        self._dirty[sub.key] = sub
        if state not in r.TERMINAL:
            return
        sub.finished_at = self.clock()
        for observer in self.observers:
            observer(task, sub)
        if task.terminal == task.total:
            self._open.discard(task.task_id)
            task.finished_at = sub.finished_at
            self._dirty_tasks.add(task.task_id)
            self.log.info(
                "emulator.task.finished",
                task_id=task.task_id,
                status=task.status(task.finished_at),
                **task.progress(),
            )

    def _schedule(self, sub: r.Subtask) -> None:
        heapq.heappush(self._due, (sub.due, next(self._order), sub))
        self._wake.set()

    def _index(self, task: r.Task, subs: list[r.Subtask]) -> None:
        task.counts = dict.fromkeys(r.STATES, 0)
        for sub in subs:
            task.counts[sub.state] += 1
        self.tasks[task.task_id] = task
        self.subtasks[task.task_id] = subs
        if task.terminal < task.total:
            self._open.add(task.task_id)
        elif task.finished_at is None:
            task.finished_at = task.created_at

    def _resume(self, task: r.Task, sub: r.Subtask, now: float) -> None:
        """A subtask that was in flight when the emulator stopped."""
        dispatcher = self.table.get(task.api, task.task_type)
        if isinstance(dispatcher, MqttDispatcher) and sub.correlation:
            sub.deadline = now + self._timeout(dispatcher, task, sub)
            self._inflight[sub.correlation] = sub
            heapq.heappush(self._deadlines, (sub.deadline, next(self._order), sub.correlation))
            return  # sent again by redeliver() once the link is up
        sub.attempts = max(0, sub.attempts - 1)
        self._move(task, sub, r.WAITTING)
        sub.due = now
        self._schedule(sub)

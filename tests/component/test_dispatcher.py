"""The dispatcher wired to a real codec, journal and outbox, with a fake transport.

The transport records PUBACKs and publications; the journal wrapper and scripted executors let
each test decide when journal writes and executions complete, so ordering rules are checked
without a broker or timing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.core.errors import JournalError
from agent.core.model import CommandRequest, MessageDelivery, Subtask
from agent.executors.unsupported import UnsupportedExecutor
from agent.journal.base import AcceptOutcome, Finish, Journal, SubtaskState
from agent.journal.memory import MemoryJournal
from agent.journal.sqlite import SqliteJournal
from agent.pipeline.dispatcher import RUNNING, Dispatcher
from agent.pipeline.executor import Context, Executor, Outcome
from agent.pipeline.outbox import Outbox
from agent.pipeline.uplink import Uplink
from agent.profiles.huawei_iotda import HuaweiIotdaProfile
from tests.support.fakes import (
    ControlledJournal,
    FakeTransport,
    LogRecorder,
    ScriptedExecutor,
    inbound,
    until,
)

DEVICE = "dev-1"
SYS = f"$oc/devices/{DEVICE}/sys/"


@dataclass
class Rig:
    """A dispatcher and everything around it."""

    journal: ControlledJournal
    transport: FakeTransport
    outbox: Outbox
    commands: ScriptedExecutor
    messages: ScriptedExecutor
    upgrades: ScriptedExecutor
    dispatcher: Dispatcher
    log: LogRecorder
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def command(self, rid: str, mid: int, *, name: str = "X", dup: bool = False) -> None:
        payload = json.dumps({"command_name": name, "paras": {"rid": rid}}).encode()
        self.dispatcher.receive(inbound(f"{SYS}commands/request_id={rid}", payload, mid, dup=dup))

    def message(self, payload: bytes, mid: int, *, dup: bool = False) -> None:
        self.dispatcher.receive(inbound(f"{SYS}messages/down", payload, mid, dup=dup))

    def upgrade(self, mid: int, *, event_time: str, dup: bool = False) -> None:
        """The platform's firmware offer: no ``event_id``, a new time and token per push."""
        paras = {
            "version": "2.0",
            "url": "https://packages.example/fw-2.0.bin",
            "file_size": 10,
            "access_token": f"token-{event_time}",
            "expires": 86400,
            "sign": "a" * 64,
        }
        service = {"service_id": "$ota", "event_type": "firmware_upgrade", "paras": paras}
        body = {"object_device_id": DEVICE, "services": [{**service, "event_time": event_time}]}
        payload = json.dumps(body).encode()
        self.dispatcher.receive(inbound(f"{SYS}events/down", payload, mid, dup=dup))

    def acked(self) -> list[int]:
        return [m.mid for m in self.transport.acked]

    def answers(self, rid: str) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.transport.payloads(f"/request_id={rid}")]

    async def open_states(self) -> dict[str, str]:
        rows = await self.journal.open_subtasks(DEVICE)
        return {row.key.rsplit("/", 1)[1]: row.state for row in rows}


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture(name="make_rig")
async def _make_rig() -> AsyncIterator[RigFactory]:
    rigs: list[Rig] = []

    async def make(
        *,
        journal: Journal | None = None,
        max_concurrent: int = 8,
        hold: bool = False,
        crash: Exception | None = None,
        start: bool = True,
    ) -> Rig:
        log = LogRecorder()
        controlled = ControlledJournal(journal or MemoryJournal())
        transport = FakeTransport()
        outbox = Outbox(DEVICE, controlled, transport, log=log)
        profile = HuaweiIotdaProfile(DEVICE)
        commands = ScriptedExecutor(hold_all=hold, crash=crash)
        messages = ScriptedExecutor(hold_all=hold)
        upgrades = ScriptedExecutor(hold_all=hold)
        executors: dict[str, Executor] = {
            "command": commands,
            "message": messages,
            "upgrade": upgrades,
            "unsupported": UnsupportedExecutor(),
        }
        uplink = Uplink(
            agent_id=DEVICE,
            profile=profile,
            journal=controlled,
            outbox=outbox,
            transport=transport,
            log=log,
        )
        ticks = itertools.count()
        dispatcher = Dispatcher(
            agent_id=DEVICE,
            profile=profile,
            journal=controlled,
            outbox=outbox,
            executors=executors,
            uplink=uplink,
            ack=transport.ack,
            max_concurrent=max_concurrent,
            log=log,
            clock=lambda: 1000.0 + next(ticks),  # every reading differs
        )
        rig = Rig(controlled, transport, outbox, commands, messages, upgrades, dispatcher, log)
        if start:
            loop = asyncio.get_running_loop()
            rig.tasks = [loop.create_task(dispatcher.run()), loop.create_task(outbox.run())]
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.dispatcher.stop_intake()
        rig.commands.release()
        rig.messages.release()
        await rig.dispatcher.drain(0)
        for task in rig.tasks:
            task.cancel()
        await asyncio.gather(*rig.tasks, return_exceptions=True)
        for task in rig.tasks:
            assert task.cancelled(), f"{task.get_name()} ended early: {task.exception()!r}"


# -- acknowledgement order -------------------------------------------------------------------


async def test_pubacks_leave_in_arrival_order_when_journaling_finishes_out_of_order(
    make_rig: RigFactory,
) -> None:
    """A later message journaled first still waits for the earlier one's PUBACK."""
    rig = await make_rig()
    rig.journal.hold("/r1")
    rig.command("r1", mid=1)
    rig.command("r2", mid=2)
    rig.command("r3", mid=3)
    await until(lambda: len(rig.journal.accepted_keys) == 2, "r2 and r3 journaled")

    assert rig.acked() == []

    rig.journal.release("/r1")
    await until(lambda: len(rig.acked()) == 3, "all acknowledged")
    assert rig.acked() == [1, 2, 3]
    assert [k.rsplit("/", 1)[1] for k in rig.journal.accepted_keys] == ["r2", "r3", "r1"]


async def test_nothing_is_acknowledged_before_it_is_journaled(make_rig: RigFactory) -> None:
    """The PUBACK for a subtask follows its journal record, never precedes it."""
    rig = await make_rig()
    rig.journal.hold("/r1")
    rig.command("r1", mid=1)
    rig.command("r2", mid=2)
    await until(lambda: len(rig.journal.entered_keys) == 2, "both being journaled")
    await until(lambda: rig.journal.accepted_keys != [], "r2 journaled")

    assert rig.acked() == []
    assert rig.commands.keys() == [f"huawei-iotda/{DEVICE}/commands/r2"]

    rig.journal.release("/r1")
    await until(lambda: rig.acked() == [1, 2], "the PUBACKs")


async def test_a_journal_failure_leaves_the_message_unacknowledged(make_rig: RigFactory) -> None:
    """If the journal cannot record it, the broker keeps it: no PUBACK, no execution."""
    rig = await make_rig()
    rig.journal.fail("/r1")
    rig.command("r1", mid=1)
    rig.command("r2", mid=2)
    await until(lambda: rig.acked() == [2], "r2 acknowledged")

    assert rig.commands.keys() == [f"huawei-iotda/{DEVICE}/commands/r2"]
    (failure,) = rig.log.events("journal.accept.failed")
    assert "disk full" in failure["error"]
    assert failure["topic"].endswith("request_id=r1")

    rig.journal.heal()  # the disk has room again; the broker redelivers
    rig.command("r1", mid=1, dup=True)
    await until(lambda: rig.acked() == [2, 1], "r1 acknowledged on redelivery")
    assert len(rig.commands.executions) == 2


# -- at most once ----------------------------------------------------------------------------


async def test_a_repeated_request_id_is_not_executed_again_and_gets_its_answer_again(
    make_rig: RigFactory,
) -> None:
    """A finished command repeated: the stored answer is sent again, nothing runs."""
    rig = await make_rig()
    rig.command("r1", mid=1)
    await until(lambda: len(rig.answers("r1")) == 1, "the first answer")

    rig.command("r1", mid=2)
    await until(lambda: len(rig.answers("r1")) == 2, "the answer again")

    assert len(rig.commands.executions) == 1
    first, second = rig.answers("r1")
    assert first == second == {"result_code": 0, "response_name": "DONE", "paras": {}}
    assert rig.acked() == [1, 2]
    (duplicate,) = rig.log.events("subtask.duplicate")
    assert (duplicate["state"], duplicate["answered_again"]) == ("succeeded", 1)


async def test_a_request_repeated_while_it_runs_is_not_run_twice(make_rig: RigFactory) -> None:
    """A redelivery of a running command is acknowledged and otherwise left alone."""
    rig = await make_rig(hold=True)
    rig.command("r1", mid=1)
    await until(lambda: len(rig.commands.executions) == 1, "r1 running")

    rig.command("r1", mid=1, dup=True)
    await until(lambda: rig.acked() == [1, 1], "the redelivery acknowledged")
    rig.commands.release()
    await until(lambda: len(rig.answers("r1")) == 1, "one answer")

    assert len(rig.commands.executions) == 1
    (duplicate,) = rig.log.events("subtask.duplicate")
    assert (duplicate["state"], duplicate["answered_again"]) == (RUNNING, 0)


async def test_content_keyed_messages_use_the_dup_flag_to_spot_redeliveries(
    make_rig: RigFactory,
) -> None:
    """Messages without an id: a DUP redelivery is recognised; the same bytes anew are new."""
    rig = await make_rig()
    rig.message(b"raw payload", mid=5)
    await until(lambda: len(rig.messages.executions) == 1, "first delivery")

    rig.message(b"raw payload", mid=5, dup=True)  # the broker resending packet 5
    await until(lambda: len(rig.acked()) == 2, "the redelivery acknowledged")
    executed_after_redelivery = len(rig.messages.executions)
    rig.message(b"raw payload", mid=6)  # the platform sending the same bytes again
    rig.message(b"raw payload", mid=5)  # ... and again, reusing a free packet id
    await until(lambda: len(rig.acked()) == 4, "all acknowledged")
    await until(lambda: len(rig.messages.executions) == 3, "the new ones executed")

    assert executed_after_redelivery == 1
    assert len(set(rig.messages.keys())) == 3
    assert rig.acked() == [5, 5, 6, 5]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_an_upgrade_offer_without_id_runs_again_only_after_it_failed(
    make_rig: RigFactory, tmp_path: Path, backend: str
) -> None:
    """An offer without an id runs again only after it failed, and never on a DUP.

    Such offers are keyed by the work they name: a re-push of a success is answered from the
    journal; after a failure, a fresh push (a retried subtask, a new task) runs again, while
    the broker's redelivery (DUP) of that push is still the same request.
    """
    journal = MemoryJournal() if backend == "memory" else await SqliteJournal.open(tmp_path / "j")
    rig = await make_rig(journal=journal)
    rig.upgrades.succeed = False
    rig.upgrade(1, event_time="20261203T080000Z")
    await until(lambda: rig.dispatcher.in_flight == 0 and len(rig.acked()) == 1, "failed")

    rig.upgrades.succeed = True
    rig.upgrade(2, event_time="20261203T090000Z")  # the platform asks again
    await until(lambda: len(rig.upgrades.executions) == 2, "run again")
    await until(lambda: rig.dispatcher.in_flight == 0 and len(rig.acked()) == 2, "succeeded")
    rig.upgrade(2, event_time="20261203T090000Z", dup=True)  # the broker resends that push
    rig.upgrade(3, event_time="20261203T100000Z")  # re-pushed after a reconnect
    await until(lambda: len(rig.acked()) == 4, "all acknowledged")
    await until(lambda: rig.dispatcher.in_flight == 0, "done")

    assert len(rig.upgrades.executions) == 2
    first, second = rig.upgrades.keys()
    assert first == second  # the same work, asked for twice
    repeats = rig.log.events("subtask.duplicate")
    assert [(r["state"], r["answered_again"]) for r in repeats] == [(SubtaskState.SUCCEEDED, 0)] * 2
    if isinstance(journal, SqliteJournal):
        await journal.close()


async def test_a_dup_redelivery_of_a_message_never_journaled_is_executed(
    make_rig: RigFactory,
) -> None:
    """DUP only means "seen before" if it was journaled; otherwise it is the first delivery."""
    rig = await make_rig()
    rig.message(b"payload", mid=9, dup=True)

    await until(lambda: len(rig.messages.executions) == 1, "execution")
    assert rig.acked() == [9]


async def test_messages_with_an_id_are_delivered_once(make_rig: RigFactory) -> None:
    """A system-format message id is the key: the same id again is not delivered again."""
    rig = await make_rig()
    body = json.dumps({"id": "m-1", "content": "hello"}).encode()
    rig.message(body, mid=1)
    rig.message(body, mid=2)
    await until(lambda: len(rig.acked()) == 2, "both acknowledged")
    await until(lambda: len(rig.messages.executions) == 1, "one delivery")
    await until(lambda: rig.dispatcher.in_flight == 0, "done")

    assert len(rig.messages.executions) == 1
    assert rig.transport.sent == []  # messages have no answer


# -- rejected and ignored input --------------------------------------------------------------


async def test_a_malformed_command_is_answered_journaled_and_not_run(make_rig: RigFactory) -> None:
    """Bad input gets a failure answer and a log line; a repeat gets the same answer."""
    rig = await make_rig()
    topic = f"{SYS}commands/request_id=bad-1"
    rig.dispatcher.receive(inbound(topic, b"{not json", 1))
    await until(lambda: len(rig.answers("bad-1")) == 1, "the failure answer")
    rig.dispatcher.receive(inbound(topic, b"{not json", 2))
    await until(lambda: len(rig.answers("bad-1")) == 2, "the answer again")

    assert rig.commands.executions == []
    answer = rig.answers("bad-1")[0]
    assert answer["result_code"] == 4
    assert "not valid JSON" in answer["paras"]["reason"]
    assert rig.acked() == [1, 2]
    rejected = rig.log.events("message.rejected")
    assert len(rejected) == 2
    assert rejected[0]["answered"] is True
    assert "not valid JSON" in rejected[0]["reason"]


async def test_unanswerable_garbage_is_acknowledged_and_logged(make_rig: RigFactory) -> None:
    """Garbage without a reply channel is logged and acknowledged (keeping it helps nobody)."""
    rig = await make_rig()
    rig.dispatcher.receive(inbound(f"{SYS}events/down", b"\x00garbage", 1))
    rig.dispatcher.receive(inbound(f"{SYS}properties/get/request_id=g", b"{}", 2))
    rig.dispatcher.receive(inbound("not/ours", b"x", 3))

    await until(lambda: rig.acked() == [1, 2, 3], "all acknowledged")
    assert [line["answered"] for line in rig.log.events("message.rejected")] == [False, False]
    assert len(rig.log.events("message.ignored")) == 1
    assert rig.transport.sent == []


async def test_a_property_set_is_answered_as_unsupported(make_rig: RigFactory) -> None:
    """Requests the agent understands but does not carry out get a clear failure answer."""
    rig = await make_rig()
    rig.dispatcher.receive(inbound(f"{SYS}properties/set/request_id=p1", b'{"services":[]}', 1))

    await until(lambda: len(rig.answers("p1")) == 1, "the answer")
    assert rig.answers("p1")[0]["result_code"] == 1
    assert "not supported" in rig.answers("p1")[0]["result_desc"]


async def test_a_bug_while_accepting_one_message_does_not_stop_the_dispatcher(
    make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug hit by one message is logged, that message left unacknowledged; later ones served."""
    rig = await make_rig()
    original = rig.journal.accept

    async def buggy(agent_id: str, **kwargs: Any) -> Any:
        if kwargs["key"].endswith("/poison"):
            raise TypeError("a bug, not a journal failure")
        return await original(agent_id, **kwargs)

    monkeypatch.setattr(rig.journal, "accept", buggy)
    rig.command("poison", mid=1)
    rig.command("r2", mid=2)

    await until(lambda: len(rig.answers("r2")) == 1, "the next command answered")
    assert rig.acked() == [2]
    (crash,) = rig.log.events("message.admit.crashed")
    assert crash["topic"].endswith("request_id=poison")
    assert not any(task.done() for task in rig.tasks)


async def test_an_executor_crash_still_ends_the_subtask_with_an_answer(
    make_rig: RigFactory,
) -> None:
    """An executor bug becomes a failure answer; the subtask does not stay open."""
    rig = await make_rig(crash=RuntimeError("executor bug"))
    rig.command("r1", mid=1)

    await until(lambda: len(rig.answers("r1")) == 1, "an answer")
    assert rig.answers("r1")[0]["result_code"] == 6
    assert await rig.open_states() == {}
    (finished,) = rig.log.events("subtask.finished")
    assert "executor bug" in finished["crash"]
    assert len(rig.log.events("subtask.crashed")) == 1


# -- execution slots and states --------------------------------------------------------------


async def test_a_subtask_that_waited_for_a_slot_is_journaled_running_when_it_starts(
    make_rig: RigFactory,
) -> None:
    """With one slot, the second subtask waits as accepted and becomes running on starting."""
    rig = await make_rig(max_concurrent=1, hold=True)
    rig.command("r1", mid=1)
    rig.command("r2", mid=2)
    await until(lambda: rig.acked() == [1, 2], "both acknowledged")
    await until(lambda: len(rig.commands.executions) == 1, "r1 running")

    assert await rig.open_states() == {"r1": RUNNING, "r2": SubtaskState.ACCEPTED}

    rig.commands.release("/r1")
    await until(lambda: len(rig.commands.executions) == 2, "r2 running")
    assert await rig.open_states() == {"r2": RUNNING}
    rig.commands.release("/r2")
    await until(lambda: len(rig.answers("r2")) == 1, "r2 answered")
    assert await rig.open_states() == {}


async def test_the_journaled_receive_time_is_the_one_the_executor_sees(
    make_rig: RigFactory,
) -> None:
    """Recovery reuses the journaled receive time (e.g. for spool file names): they agree."""
    rig = await make_rig(hold=True)
    rig.message(b"raw", mid=1)
    await until(lambda: len(rig.messages.executions) == 1, "running")

    (row,) = await rig.journal.open_subtasks(DEVICE)

    assert row.received_at == rig.messages.executions[0].received_at


async def test_each_subtask_ends_with_one_summary_line(make_rig: RigFactory) -> None:
    """One subtask.finished line per subtask, carrying its key, kind, state and duration."""
    rig = await make_rig()
    rig.command("r1", mid=1)
    rig.command("r2", mid=2)
    await until(lambda: len(rig.log.events("subtask.finished")) == 2, "two summaries")

    lines = rig.log.events("subtask.finished")
    assert sorted(line["key"].rsplit("/", 1)[1] for line in lines) == ["r1", "r2"]
    assert all(line["kind"] == "command" and line["state"] == "succeeded" for line in lines)
    assert all(line["duration_ms"] >= 0 for line in lines)


# -- restart and shutdown --------------------------------------------------------------------


async def _left_open(journal: Journal, rid: str, state: str) -> None:
    """Journal command ``rid`` as a previous run left it: in ``state``, never finished."""
    event = HuaweiIotdaProfile(DEVICE).decode(
        f"{SYS}commands/request_id={rid}", b'{"command_name": "X"}'
    )
    assert isinstance(event, CommandRequest)
    accepted = await journal.accept(
        DEVICE,
        key=event.key,
        device_id=DEVICE,
        kind="command",
        request=event.model_dump_json(),
        now=1.0,
        state=state,
    )
    assert accepted.outcome is AcceptOutcome.NEW


async def test_recover_runs_never_started_subtasks_and_interrupts_started_ones(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    """After a crash: accepted-only subtasks run now; running ones are reported interrupted."""
    journal = await SqliteJournal.open(tmp_path / "journal.db")
    await _left_open(journal, "waiting", SubtaskState.ACCEPTED)
    await _left_open(journal, "started", RUNNING)
    rig = await make_rig(journal=journal)

    resumed = await rig.dispatcher.recover()

    assert resumed == 2
    await until(lambda: len(rig.answers("waiting")) == 1, "the waiting one answered")
    await until(lambda: len(rig.answers("started")) == 1, "the started one answered")
    assert rig.commands.keys() == [f"huawei-iotda/{DEVICE}/commands/waiting"]
    assert rig.commands.recoveries == [(f"huawei-iotda/{DEVICE}/commands/started", RUNNING)]
    assert rig.answers("waiting")[0]["result_code"] == 0
    assert rig.answers("started")[0]["result_code"] == 6
    assert await rig.open_states() == {}
    await journal.close()


class _EndedElsewhere(MemoryJournal):
    """A journal in which subtasks whose key contains "gone" were ended by another writer."""

    async def finish(self, agent_id: str, key: str, finish: Finish, now: float) -> list[Any]:
        if "gone" in key:
            raise JournalError(f"subtask {key!r} is not open")
        return await super().finish(agent_id, key, finish, now)


async def test_a_subtask_that_cannot_be_closed_does_not_stop_recovery(
    make_rig: RigFactory,
) -> None:
    """A journal error closing one recovered subtask is logged; the rest recover, none raise."""
    journal = _EndedElsewhere()
    await _left_open(journal, "gone", RUNNING)
    await _left_open(journal, "kept", RUNNING)
    rig = await make_rig(journal=journal)

    assert await rig.dispatcher.recover() == 2

    await until(lambda: len(rig.answers("kept")) == 1, "the other one answered")
    (failure,) = rig.log.events("journal.write.failed")
    assert "gone" in failure["error"]
    assert await rig.open_states() == {"gone": RUNNING}


async def test_recover_restores_message_content_byte_for_byte(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    """A message journaled before a crash runs after it with exactly the bytes received."""
    journal = await SqliteJournal.open(tmp_path / "journal.db")
    content = bytes(range(256)) + b"\xfb\xff\xfe"  # base64 of these needs "+" and "/"
    event = HuaweiIotdaProfile(DEVICE).decode(f"{SYS}messages/down", content)
    assert isinstance(event, MessageDelivery)
    await journal.accept(
        DEVICE,
        key=event.key,
        device_id=DEVICE,
        kind="message",
        request=event.model_dump_json(),
        now=1.0,
    )
    rig = await make_rig(journal=journal)

    await rig.dispatcher.recover()

    await until(lambda: rig.messages.executions != [], "the message executed")
    (execution,) = rig.messages.executions
    assert isinstance(execution.subtask, MessageDelivery)
    assert execution.subtask.content == content
    await journal.close()


async def test_drain_interrupts_what_is_still_running_after_the_grace(
    make_rig: RigFactory,
) -> None:
    """On shutdown, a subtask still running after the grace is stopped and answered."""
    rig = await make_rig(hold=True)
    rig.command("r1", mid=1)
    await until(lambda: len(rig.commands.executions) == 1, "running")

    rig.dispatcher.stop_intake()
    await rig.dispatcher.drain(grace=0.05)

    assert rig.commands.cancelled == [f"huawei-iotda/{DEVICE}/commands/r1"]
    assert rig.commands.recoveries == [(f"huawei-iotda/{DEVICE}/commands/r1", RUNNING)]
    await until(lambda: len(rig.answers("r1")) == 1, "the interrupted answer")
    assert rig.answers("r1")[0]["result_code"] == 6
    assert await rig.open_states() == {}
    assert rig.dispatcher.in_flight == 0


async def test_drain_lets_work_that_finishes_within_the_grace_finish(
    make_rig: RigFactory,
) -> None:
    """Work that completes during the grace ends normally, not as interrupted."""
    rig = await make_rig(hold=True)
    rig.command("r1", mid=1)
    await until(lambda: len(rig.commands.executions) == 1, "running")

    rig.dispatcher.stop_intake()
    rig.commands.release()
    await rig.dispatcher.drain(grace=30)

    assert rig.commands.cancelled == []
    await until(lambda: len(rig.answers("r1")) == 1, "the answer")
    assert rig.answers("r1")[0]["result_code"] == 0


async def test_drain_leaves_waiting_subtasks_for_the_next_start(make_rig: RigFactory) -> None:
    """A subtask still waiting for a slot at shutdown stays journaled as accepted, unanswered."""
    rig = await make_rig(max_concurrent=1, hold=True)
    rig.command("r1", mid=1)
    rig.command("r2", mid=2)
    await until(lambda: rig.acked() == [1, 2], "both acknowledged")

    rig.dispatcher.stop_intake()
    await rig.dispatcher.drain(grace=0.05)

    assert await rig.open_states() == {"r2": SubtaskState.ACCEPTED}
    assert rig.answers("r2") == []
    assert len(rig.commands.executions) == 1


async def test_drain_stops_an_admission_under_way_from_starting_its_subtask_later(
    make_rig: RigFactory,
) -> None:
    """A publication still being journaled at shutdown never starts a subtask after drain."""
    rig = await make_rig()
    rig.journal.hold("/r1")
    rig.command("r1", mid=1)
    await until(lambda: len(rig.journal.entered_keys) == 1, "r1 being journaled")

    rig.dispatcher.stop_intake()
    await rig.dispatcher.drain(grace=0)
    rig.journal.release("/r1")
    await _settle_loop()

    assert rig.commands.executions == []
    assert rig.acked() == []
    assert rig.dispatcher.in_flight == 0


async def test_abort_ends_every_task_of_the_run_and_closes_nothing(make_rig: RigFactory) -> None:
    """As a process death: admissions and subtasks end, unanswered, open for the next start."""
    rig = await make_rig(hold=True)
    rig.command("r1", mid=1)
    await until(lambda: len(rig.commands.executions) == 1, "r1 running")
    rig.journal.hold("/r2")
    rig.command("r2", mid=2)
    await until(lambda: len(rig.journal.entered_keys) == 2, "r2 being journaled")

    await rig.dispatcher.abort()

    assert rig.commands.cancelled == [f"huawei-iotda/{DEVICE}/commands/r1"]
    assert rig.dispatcher.in_flight == 0
    rig.journal.release("/r2")
    rig.commands.release()
    await _settle_loop()
    assert rig.commands.keys() == [f"huawei-iotda/{DEVICE}/commands/r1"]
    assert rig.commands.recoveries == []  # the next start recovers it, not this run
    assert rig.answers("r1") == []
    assert 2 not in rig.acked()
    assert await rig.open_states() == {"r1": RUNNING}


class _SlowToStop(ScriptedExecutor):
    """Cleans up for as long as the test says when cancelled (a handler being killed)."""

    def __init__(self) -> None:
        super().__init__(hold_all=True)
        self.cleanup = asyncio.Event()
        self.cleaned = False

    async def execute(self, subtask: Subtask, ctx: Context) -> Outcome:
        try:
            return await super().execute(subtask, ctx)
        except asyncio.CancelledError:
            await self.cleanup.wait()
            self.cleaned = True
            raise


async def test_abort_returns_only_once_the_last_subtask_has_ended(make_rig: RigFactory) -> None:
    """No time bound: a subtask slow to stop is waited for, never left running."""
    rig = await make_rig()
    slow = _SlowToStop()
    rig.dispatcher._executors["command"] = slow  # one executor swapped in
    rig.command("r1", mid=1)
    await until(lambda: len(slow.executions) == 1, "r1 running")

    abort = asyncio.get_running_loop().create_task(rig.dispatcher.abort())
    await _settle_loop()
    assert not abort.done()

    slow.cleanup.set()
    await abort
    assert slow.cleaned
    assert rig.dispatcher.in_flight == 0


async def _settle_loop(rounds: int = 50) -> None:
    """Let every ready callback and task step run (no timing involved)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_after_stop_intake_nothing_new_is_taken_or_acknowledged(
    make_rig: RigFactory,
) -> None:
    """Messages arriving while stopping stay with the broker for the next connection."""
    rig = await make_rig()
    rig.dispatcher.stop_intake()
    rig.command("late", mid=7)
    await rig.dispatcher.drain(grace=1)

    assert rig.acked() == []
    assert rig.commands.executions == []
    assert await rig.journal.open_subtasks(DEVICE) == []


async def test_a_rejection_journal_failure_leaves_the_request_unacknowledged(
    make_rig: RigFactory,
) -> None:
    """If even the failure answer cannot be journaled, the broker keeps the request."""
    rig = await make_rig()
    rig.journal.fail("/bad-1")
    rig.dispatcher.receive(inbound(f"{SYS}commands/request_id=bad-1", b"{", 1))
    rig.command("r2", mid=2)

    await until(lambda: rig.acked() == [2], "only r2 acknowledged")
    assert rig.answers("bad-1") == []
    assert len(rig.log.events("journal.accept.failed")) == 1


async def test_a_finish_that_cannot_be_journaled_is_logged(make_rig: RigFactory) -> None:
    """A journal failure at the end of a subtask is logged; the dispatcher carries on."""
    rig = await make_rig()
    original = rig.journal.finish

    async def failing(agent_id: str, key: str, finish: Finish, now: float) -> Any:
        if key.endswith("/r1"):
            raise JournalError("disk full at the end")
        return await original(agent_id, key, finish, now)

    rig.journal.finish = failing  # type: ignore[method-assign]
    rig.command("r1", mid=1)
    rig.command("r2", mid=2)

    await until(lambda: len(rig.answers("r2")) == 1, "r2 answered")
    (failure,) = rig.log.events("journal.write.failed")
    assert failure["error"] == "disk full at the end"
    assert rig.answers("r1") == []

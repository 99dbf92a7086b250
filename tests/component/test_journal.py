"""The journal contract, run against both implementations, plus what only SQLite promises.

The SQLite tests use real files: migrations, durability across re-opening, group commit under
concurrency, savepoint isolation inside a batch, and reading status while the writer works.
"""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.core.errors import JournalError
from agent.core.model import Publish
from agent.journal.base import AcceptOutcome, Finish, Journal, SubtaskState
from agent.journal.memory import MemoryJournal
from agent.journal.schema import LATEST, MIGRATIONS, migrate
from agent.journal.sqlite import SqliteJournal
from agent.journal.status import read_status

AGENT = "gw-1"
OTHER = "gw-2"


def _reply(n: int) -> Publish:
    return Publish(topic=f"t/response/request_id=r{n}", payload=f'{{"n":{n}}}'.encode())


def _done(*replies: Publish, state: str = SubtaskState.SUCCEEDED) -> Finish:
    return Finish(state=state, result={"result_code": 0}, publishes=list(replies))


async def _accept(journal: Journal, key: str, *, now: float = 1.0, agent: str = AGENT) -> None:
    accepted = await journal.accept(
        agent, key=key, device_id="dev", kind="command", request='{"k":1}', now=now
    )
    assert accepted.outcome is AcceptOutcome.NEW


Factory = Callable[[], Awaitable[Journal]]


@pytest.fixture(name="open_journal", params=["memory", "sqlite"])
async def _open_journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """Opens the journal under test; the SQLite one re-opens the same file each time."""
    opened: list[Journal] = []
    memory = MemoryJournal()

    async def factory() -> Journal:
        journal: Journal
        if request.param == "memory":
            journal = memory
        else:
            journal = await SqliteJournal.open(tmp_path / "journal.db")
        opened.append(journal)
        return journal

    yield factory
    for journal in opened:
        await journal.close()


@pytest.fixture(name="journal")
async def _journal(open_journal: Factory) -> Journal:
    return await open_journal()


# -- the contract (both implementations) -----------------------------------------------------


async def test_a_new_key_is_accepted_and_a_repeat_while_open_is_in_progress(
    journal: Journal,
) -> None:
    """The first accept is NEW; a repeat of a key still running says so and queues nothing."""
    first = await journal.accept(
        AGENT, key="k1", device_id="dev", kind="command", request="{}", now=1.0, state="running"
    )
    again = await journal.accept(
        AGENT, key="k1", device_id="dev", kind="command", request="{}", now=2.0
    )

    assert (first.outcome, first.state, first.requeued) == (AcceptOutcome.NEW, "running", [])
    assert (again.outcome, again.state, again.requeued) == (
        AcceptOutcome.IN_PROGRESS,
        "running",
        [],
    )


async def test_finish_queues_the_replies_and_a_repeat_gets_them_again(journal: Journal) -> None:
    """A finished key answers a repeat with its stored replies, queued again as new rows."""
    await _accept(journal, "k1")
    items = await journal.finish(AGENT, "k1", _done(_reply(1), _reply(2)), now=2.0)

    repeat = await journal.accept(
        AGENT, key="k1", device_id="dev", kind="command", request="{}", now=3.0
    )

    assert [(i.topic, i.payload, i.qos) for i in items] == [
        (p.topic, p.payload, p.qos) for p in (_reply(1), _reply(2))
    ]
    assert repeat.outcome is AcceptOutcome.FINISHED
    assert repeat.state == SubtaskState.SUCCEEDED
    assert [(i.topic, i.payload) for i in repeat.requeued] == [(i.topic, i.payload) for i in items]
    assert {i.id for i in repeat.requeued}.isdisjoint({i.id for i in items})


async def test_retry_failed_reopens_only_work_that_failed(journal: Journal) -> None:
    """With ``retry_failed``, only a failed key is accepted anew, with nothing requeued.

    The failed attempt is archived; a succeeded or running key is a repeat as before, and the
    new attempt is what the key names from then on.
    """

    async def again(key: str, now: float) -> Any:
        return await journal.accept(
            AGENT,
            key=key,
            device_id="dev",
            kind="upgrade",
            request="{}",
            now=now,
            retry_failed=True,
        )

    await _accept(journal, "failed")
    await journal.finish(AGENT, "failed", _done(_reply(1), state=SubtaskState.FAILED), now=2.0)
    await _accept(journal, "ok")
    await journal.finish(AGENT, "ok", _done(_reply(2)), now=2.0)
    await _accept(journal, "open")

    retried = await again("failed", 3.0)
    repeated = await again("ok", 3.0)
    running = await again("open", 3.0)
    while_retrying = await again("failed", 4.0)
    await journal.finish(AGENT, "failed", _done(_reply(3)), now=5.0)
    after_success = await again("failed", 6.0)

    assert (retried.outcome, retried.requeued) == (AcceptOutcome.NEW, [])
    assert repeated.outcome is AcceptOutcome.FINISHED
    assert [i.payload for i in repeated.requeued] == [_reply(2).payload]
    assert running.outcome is AcceptOutcome.IN_PROGRESS
    assert while_retrying.outcome is AcceptOutcome.IN_PROGRESS
    assert after_success.outcome is AcceptOutcome.FINISHED
    assert [i.payload for i in after_success.requeued] == [_reply(3).payload]


async def test_accept_with_finish_records_a_rejection_in_one_step(journal: Journal) -> None:
    """A request rejected on arrival is recorded as ended, with its answer queued."""
    accepted = await journal.accept(
        AGENT,
        key="bad",
        device_id="dev",
        kind="rejected",
        request="{}",
        now=1.0,
        finish=_done(_reply(9), state=SubtaskState.FAILED),
    )
    repeat = await journal.accept(
        AGENT, key="bad", device_id="dev", kind="rejected", request="{}", now=2.0
    )

    assert accepted.outcome is AcceptOutcome.NEW
    assert accepted.state == SubtaskState.FAILED
    assert [i.payload for i in accepted.requeued] == [_reply(9).payload]
    assert await journal.open_subtasks(AGENT) == []
    assert repeat.outcome is AcceptOutcome.FINISHED
    assert [i.payload for i in repeat.requeued] == [_reply(9).payload]


async def test_finishing_twice_or_an_unknown_key_fails(journal: Journal) -> None:
    """Only an open subtask can end, and only once."""
    await _accept(journal, "k1")
    await journal.finish(AGENT, "k1", _done(), now=2.0)

    with pytest.raises(JournalError, match="not open"):
        await journal.finish(AGENT, "k1", _done(_reply(1)), now=3.0)
    with pytest.raises(JournalError, match="not open"):
        await journal.finish(AGENT, "nope", _done(), now=3.0)
    assert await journal.pending(AGENT, 0, 10) == []


async def test_record_state_only_moves_open_subtasks(journal: Journal) -> None:
    """Intermediate states are recorded for open subtasks and refused for others."""
    await _accept(journal, "k1")
    await journal.record_state("k1", "downloading", {"bytes": 10}, now=2.0)
    await journal.record_state("k1", "installing", {"step": 2}, now=3.0)
    (row,) = await journal.open_subtasks(AGENT)
    await journal.finish(AGENT, "k1", _done(), now=4.0)

    assert (row.key, row.state, row.detail) == ("k1", "installing", {"step": 2})
    with pytest.raises(JournalError):
        await journal.record_state("k1", "again", {}, now=5.0)
    with pytest.raises(JournalError):
        await journal.record_state("unknown", "x", {}, now=5.0)


async def test_open_subtasks_lists_one_agents_unfinished_work_oldest_first(
    journal: Journal,
) -> None:
    """Recovery sees the agent's open subtasks in the order they arrived, and nothing else."""
    await _accept(journal, "late", now=30.0)
    await _accept(journal, "early", now=10.0)
    await _accept(journal, "middle", now=20.0)
    await _accept(journal, "done", now=5.0)
    await _accept(journal, "theirs", now=1.0, agent=OTHER)
    await journal.finish(AGENT, "done", _done(), now=6.0)

    rows = await journal.open_subtasks(AGENT)

    assert [(r.key, r.received_at) for r in rows] == [
        ("early", 10.0),
        ("middle", 20.0),
        ("late", 30.0),
    ]
    assert all((r.kind, r.state, r.request) == ("command", "accepted", '{"k":1}') for r in rows)


async def test_outbox_pages_in_order_per_agent_until_delivered(journal: Journal) -> None:
    """Queued publications come back oldest first, per agent, and go only when delivered."""
    mine = await journal.enqueue(AGENT, [_reply(n) for n in range(5)], now=1.0)
    theirs = await journal.enqueue(OTHER, [_reply(99)], now=1.0)

    first_page = await journal.pending(AGENT, 0, 2)
    second_page = await journal.pending(AGENT, first_page[-1].id, 10)
    await journal.delivered([mine[0].id, mine[3].id, 123456])
    after = await journal.pending(AGENT, 0, 10)
    await journal.delivered([])

    assert first_page == mine[:2]
    assert second_page == mine[2:]
    assert after == [mine[1], mine[2], mine[4]]
    assert await journal.pending(OTHER, 0, 10) == theirs


async def test_values_are_kept_per_agent(journal: Journal) -> None:
    """Small per-agent values can be read back, overwritten, and do not leak across agents."""
    assert await journal.get_value(AGENT, "anchor") is None
    await journal.set_value(AGENT, "anchor", "2024-01-01T00:00:00+00:00")
    await journal.set_value(AGENT, "anchor", "2024-02-01T00:00:00+00:00")
    await journal.set_value(OTHER, "anchor", "other")

    assert await journal.get_value(AGENT, "anchor") == "2024-02-01T00:00:00+00:00"
    assert await journal.get_value(OTHER, "anchor") == "other"


async def test_prune_forgets_old_finished_subtasks_only(journal: Journal) -> None:
    """Old finished subtasks go (their key is new again); open ones and the outbox stay."""
    for key, received in (("old", 1.0), ("recent", 2.0), ("open", 0.5)):
        await _accept(journal, key, now=received)
    await journal.finish(AGENT, "old", _done(_reply(1)), now=10.0)
    await journal.finish(AGENT, "recent", _done(), now=100.0)

    removed = await journal.prune(finished_before=50.0)
    again = await journal.accept(
        AGENT, key="old", device_id="dev", kind="command", request="{}", now=200.0
    )
    recent = await journal.accept(
        AGENT, key="recent", device_id="dev", kind="command", request="{}", now=200.0
    )

    assert removed == 1
    assert again.outcome is AcceptOutcome.NEW
    assert recent.outcome is AcceptOutcome.FINISHED
    assert [r.key for r in await journal.open_subtasks(AGENT)] == ["open", "old"]
    assert [i.payload for i in await journal.pending(AGENT, 0, 10)] == [_reply(1).payload]


async def test_durable_state_survives_reopening(open_journal: Factory) -> None:
    """What one journal object recorded, the next one opened on the same store still has."""
    journal = await open_journal()
    await _accept(journal, "open-one")
    await _accept(journal, "finished-one")
    items = await journal.finish(AGENT, "finished-one", _done(_reply(1)), now=2.0)
    await journal.set_value(AGENT, "anchor", "x")
    await journal.close()

    reopened = await open_journal()

    assert [r.key for r in await reopened.open_subtasks(AGENT)] == ["open-one"]
    assert await reopened.pending(AGENT, 0, 10) == items
    assert await reopened.get_value(AGENT, "anchor") == "x"
    repeat = await reopened.accept(
        AGENT, key="finished-one", device_id="dev", kind="command", request="{}", now=3.0
    )
    assert repeat.outcome is AcceptOutcome.FINISHED


async def test_many_concurrent_operations_all_take_effect(journal: Journal) -> None:
    """Hundreds of accepts and finishes at once: every one lands, none twice."""
    keys = [f"k{n:03d}" for n in range(300)]

    async def run(key: str) -> list[int]:
        await _accept(journal, key)
        items = await journal.finish(AGENT, key, _done(_reply(int(key[1:]))), now=2.0)
        return [i.id for i in items]

    ids = await asyncio.gather(*(run(key) for key in keys))
    repeats = await asyncio.gather(
        *(
            journal.accept(AGENT, key=k, device_id="dev", kind="command", request="{}", now=3.0)
            for k in keys
        )
    )

    flat = [i for group in ids for i in group]
    assert len(set(flat)) == 300
    assert {r.outcome for r in repeats} == {AcceptOutcome.FINISHED}
    pending = await journal.pending(AGENT, 0, 1000)
    assert len(pending) == 600  # each answer, and each answer again for the repeat
    assert await journal.open_subtasks(AGENT) == []


# -- SQLite only -----------------------------------------------------------------------------


async def _hold_writer(journal: SqliteJournal) -> tuple[threading.Event, asyncio.Future[None]]:
    """Occupy the writer thread inside a transaction until the returned event is set."""
    entered = threading.Event()
    go_on = threading.Event()

    def blocker(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO kv (agent_id, name, value) VALUES ('held', 'uncommitted', 'x')")
        entered.set()
        go_on.wait(10)

    held = asyncio.ensure_future(journal._submit(blocker))
    await asyncio.to_thread(entered.wait, 10)
    assert entered.is_set()
    return go_on, held


async def test_a_failing_operation_does_not_undo_the_rest_of_its_batch(tmp_path: Path) -> None:
    """Operations committed together are isolated: one failure rolls back only itself."""
    journal = await SqliteJournal.open(tmp_path / "journal.db")
    go_on, held = await _hold_writer(journal)

    def half_done_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO kv (agent_id, name, value) VALUES ('x', 'half', 'done')")
        raise sqlite3.IntegrityError("simulated constraint failure")

    # Queued while the writer is busy, so they run as one batch.
    batch = [
        asyncio.ensure_future(journal.set_value(AGENT, "before", "1")),
        asyncio.ensure_future(journal.finish(AGENT, "unknown", _done(_reply(1)), now=1.0)),
        asyncio.ensure_future(journal._submit(half_done_then_fail)),
        asyncio.ensure_future(journal.enqueue(AGENT, [_reply(2)], now=1.0)),
        asyncio.ensure_future(journal.set_value(AGENT, "after", "2")),
    ]
    await asyncio.sleep(0)
    go_on.set()
    results = await asyncio.gather(held, *batch, return_exceptions=True)

    assert results[0] is None
    assert isinstance(results[2], JournalError)
    assert isinstance(results[3], JournalError)
    assert "simulated constraint failure" in str(results[3])
    assert await journal.get_value(AGENT, "before") == "1"
    assert await journal.get_value(AGENT, "after") == "2"
    assert await journal.get_value("x", "half") is None
    assert await journal.get_value("held", "uncommitted") == "x"
    assert [i.payload for i in await journal.pending(AGENT, 0, 10)] == [_reply(2).payload]
    await journal.close()


async def test_status_can_be_read_while_the_writer_is_mid_transaction(tmp_path: Path) -> None:
    """``device-agent status`` sees committed rows and is not blocked by an open write."""
    path = tmp_path / "journal.db"
    journal = await SqliteJournal.open(path)
    await _accept(journal, "running-one", now=5.0)
    await _accept(journal, "done-one", now=6.0)
    await journal.finish(AGENT, "done-one", _done(_reply(1)), now=7.0)
    go_on, held = await _hold_writer(journal)
    uncommitted = asyncio.ensure_future(_accept(journal, "not-yet", now=8.0))

    try:
        open_rows, recent, outbox = await asyncio.wait_for(asyncio.to_thread(read_status, path), 10)
    finally:
        go_on.set()
        await held
        await uncommitted

    assert [(r.key, r.state) for r in open_rows] == [("running-one", "accepted")]
    assert [(r.key, r.state, r.result) for r in recent] == [
        ("done-one", "succeeded", {"result_code": 0})
    ]
    assert (outbox.count, outbox.oldest) == (1, 7.0)
    open_rows, _, _ = read_status(path)
    assert [r.key for r in open_rows] == ["running-one", "not-yet"]
    await journal.close()


async def test_a_fresh_journal_is_created_private_at_the_latest_schema(tmp_path: Path) -> None:
    """A new journal gets every migration, WAL mode, and permissions for the agent only."""
    path = tmp_path / "state" / "journal.db"
    journal = await SqliteJournal.open(path)
    await journal.close()

    with sqlite3.connect(path) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()

    assert version == LATEST
    assert mode == "wal"
    assert {"subtasks", "replies", "outbox", "kv"} <= tables
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_reopening_a_current_journal_migrates_nothing(tmp_path: Path) -> None:
    """Migration on a journal already at the latest version is a no-op."""
    path = tmp_path / "journal.db"
    await (await SqliteJournal.open(path)).close()

    with sqlite3.connect(path, isolation_level=None) as conn:
        found = migrate(conn)
    conn.close()

    assert found == LATEST


async def test_a_journal_from_a_newer_agent_is_refused(tmp_path: Path) -> None:
    """A schema version this agent does not know is refused rather than misread."""
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()

    with pytest.raises(JournalError, match="newer than this agent"):
        await SqliteJournal.open(path)


async def test_two_openers_migrating_at_once_both_succeed(tmp_path: Path) -> None:
    """A second process that saw the old version before the first one migrated does not fail."""
    path = tmp_path / "journal.db"
    first = sqlite3.connect(path, isolation_level=None, timeout=10)
    second = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
    reached_begin = threading.Event()
    second.set_trace_callback(lambda sql: reached_begin.set() if "BEGIN" in sql else None)
    first.execute("BEGIN IMMEDIATE")  # the first migrator holds the write lock ...
    errors: list[BaseException] = []

    def migrate_second() -> None:
        try:
            migrate(second)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=migrate_second)
    thread.start()
    assert reached_begin.wait(10)  # ... while the second one read version 0 and now waits
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            first.execute(statement)
    first.execute(f"PRAGMA user_version = {LATEST}")
    first.execute("COMMIT")
    thread.join(15)
    first.close()
    second.close()

    assert not thread.is_alive()
    assert errors == []


async def test_a_closed_journal_refuses_work(tmp_path: Path) -> None:
    """After close, operations fail with a JournalError instead of hanging."""
    journal = await SqliteJournal.open(tmp_path / "journal.db")
    await journal.close()
    await journal.close()  # closing twice is harmless

    with pytest.raises(JournalError, match="closed"):
        await journal.get_value(AGENT, "x")

"""The SQLite journal: WAL, ``synchronous=FULL``, one writer thread that commits in groups.

Every operation is a small function run on the writer thread. The thread takes whatever has
queued up, runs it in one transaction (each operation in its own savepoint, so one failure does
not undo its neighbours), commits once and only then reports back. Sixty-four subtasks arriving
together cost one fsync, not sixty-four, and the event loop never waits on the disk.

Long: one SQL implementation of the journal contract; its statements and writer belong together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agent.core.errors import JournalError
from agent.core.model import Publish
from agent.journal.base import (
    Accepted,
    AcceptOutcome,
    Finish,
    OpenSubtask,
    OutboxItem,
    SubtaskState,
    archive_key,
)
from agent.journal.schema import migrate

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

_MAX_BATCH = 512
_FORGET_WITHIN_S = 1.0


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # a failed ping shows up on the next real operation


class _Pending:
    __slots__ = ("error", "future", "loop", "op", "value")

    def __init__(
        self, op: Op, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
    ) -> None:
        self.op = op
        self.loop = loop
        self.future = future
        self.value: Any = None
        self.error: BaseException | None = None


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _settle_all(batch: list[_Pending]) -> None:
    for pending in batch:
        _settle(pending.future, pending.value, pending.error)


def connect(
    path: Path, *, synchronous: str = "full", read_only: bool = False
) -> sqlite3.Connection:
    """Open the journal database with the pragmas every connection needs."""
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Commands and messages may carry private data: the journal is readable by us only.
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


class SqliteJournal:
    """A :class:`~agent.journal.base.Journal` in one SQLite file."""

    def __init__(self, path: Path, *, synchronous: str = "full") -> None:
        self.path = path
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[list[_Pending] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Operations submitted during one turn of the event loop travel to the writer together.
        self._staged: list[_Pending] = []
        # Acknowledged outbox rows whose delete rides on the writer's next transaction.
        self._forget: list[int] = []
        self._forget_lock = threading.Lock()
        self._forget_timer: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "full") -> SqliteJournal:
        """Open (creating or migrating) the journal at ``path``."""
        journal = cls(path, synchronous=synchronous)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        journal._thread = threading.Thread(
            target=journal._writer,
            args=(asyncio.get_running_loop(), ready),
            name="journal-writer",
            daemon=True,
        )
        journal._thread.start()
        await ready
        return journal

    # -- the writer thread ----------------------------------------------------------------

    def _writer(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = connect(self.path, synchronous=self._synchronous)
            migrate(conn)
        except (sqlite3.Error, OSError, JournalError) as exc:
            error = (
                exc
                if isinstance(exc, JournalError)
                else JournalError(f"cannot open journal: {exc}")
            )
            loop.call_soon_threadsafe(_settle, ready, None, error)
            return
        loop.call_soon_threadsafe(_settle, ready, None, None)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = list(first)
                stop = False
                while len(batch) < _MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.extend(item)
                self._run_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        with self._forget_lock:
            forget, self._forget = self._forget, []
        try:
            # Optimistically as one transaction; should any operation fail, the batch is run
            # again with a savepoint around each, so the failure stays with its operation.
            if not self._attempt(conn, batch, forget, isolated=False):
                self._attempt(conn, batch, forget, isolated=True)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for pending in batch:
                pending.error = JournalError(f"journal commit failed: {exc}")
        # One wake-up per event loop for the whole batch, not one per operation.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        for pending in batch:
            by_loop.setdefault(pending.loop, []).append(pending)
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, settled)

    @staticmethod
    def _attempt(
        conn: sqlite3.Connection, batch: list[_Pending], forget: list[int], *, isolated: bool
    ) -> bool:
        """Run a batch in one transaction; False (rolled back) if an operation failed."""
        conn.execute("BEGIN IMMEDIATE")
        if forget:
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in forget])
        for pending in batch:
            pending.error = None
            if isolated:
                conn.execute("SAVEPOINT op")
            try:
                pending.value = pending.op(conn)
            except Exception as exc:
                if not isolated:
                    conn.execute("ROLLBACK")
                    return False
                conn.execute("ROLLBACK TO op")
                pending.error = exc if isinstance(exc, JournalError) else JournalError(str(exc))
            if isolated:
                conn.execute("RELEASE op")
        conn.execute("COMMIT")
        return True

    async def _submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            msg = "journal is closed"
            raise JournalError(msg)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._staged.append(_Pending(op, loop, future))
        if len(self._staged) == 1:
            loop.call_soon(self._hand_over)
        return await future

    def _hand_over(self) -> None:
        staged, self._staged = self._staged, []
        if staged:
            self._queue.put(staged)

    # -- operations -----------------------------------------------------------------------

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
        """Record a received subtask unless its key is known; a finished one is answered again."""
        insert = (
            "INSERT INTO subtasks (key, agent_id, device_id, kind, state, request,"
            " received_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        row = (key, agent_id, device_id, kind, state, request, now, now)

        def op(conn: sqlite3.Connection) -> Accepted:
            inserted = conn.execute(f"{insert} ON CONFLICT (key) DO NOTHING", row).rowcount
            if not inserted:
                known_state, finished_at = conn.execute(
                    "SELECT state, finished_at FROM subtasks WHERE key = ?", (key,)
                ).fetchone()
                if finished_at is None:
                    return Accepted(AcceptOutcome.IN_PROGRESS, known_state, [])
                if not (retry_failed and known_state == SubtaskState.FAILED):
                    requeued = _requeue(conn, agent_id, key, now)
                    return Accepted(AcceptOutcome.FINISHED, known_state, requeued)
                _archive(conn, key, archive_key(key, finished_at))
                conn.execute(insert, row)
            if finish is None:
                return Accepted(AcceptOutcome.NEW, state, [])
            items = _finish(conn, agent_id, key, finish, now)
            return Accepted(AcceptOutcome.NEW, finish.state, items)

        return await self._submit(op)

    async def record_state(self, key: str, state: str, detail: dict[str, Any], now: float) -> None:
        """Record an intermediate state of an open subtask."""

        def op(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE subtasks SET state = ?, detail = ?, updated_at = ?"
                " WHERE key = ? AND finished_at IS NULL",
                (state, json.dumps(detail), now, key),
            )
            if cursor.rowcount != 1:
                msg = f"subtask {key!r} is not open"
                raise JournalError(msg)

        await self._submit(op)

    async def finish(self, agent_id: str, key: str, finish: Finish, now: float) -> list[OutboxItem]:
        """Record the end of a subtask and queue its answers."""
        return await self._submit(lambda conn: _finish(conn, agent_id, key, finish, now))

    async def enqueue(
        self, agent_id: str, publishes: list[Publish], now: float
    ) -> list[OutboxItem]:
        """Queue publications that must reach the platform."""
        return await self._submit(lambda conn: _enqueue(conn, agent_id, None, publishes, now))

    async def open_subtasks(self, agent_id: str) -> list[OpenSubtask]:
        """Open subtasks of one agent, oldest first."""

        def op(conn: sqlite3.Connection) -> list[OpenSubtask]:
            rows = conn.execute(
                "SELECT key, kind, state, request, detail, received_at FROM subtasks"
                " WHERE agent_id = ? AND finished_at IS NULL ORDER BY received_at",
                (agent_id,),
            ).fetchall()
            return [OpenSubtask(k, kind, s, r, json.loads(d), t) for k, kind, s, r, d, t in rows]

        return await self._submit(op)

    async def pending(self, agent_id: str, after_id: int, limit: int) -> list[OutboxItem]:
        """Queued publications after ``after_id``."""

        def op(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(
                "SELECT id, topic, payload, qos FROM outbox WHERE agent_id = ? AND id > ?"
                " ORDER BY id LIMIT ?",
                (agent_id, after_id, limit),
            ).fetchall()
            return [OutboxItem(i, t, bytes(p), q) for i, t, p, q in rows]

        return await self._submit(op)

    async def delivered(self, ids: list[int]) -> None:
        """Drop acknowledged publications.

        The delete rides on the writer's next transaction (at the latest after
        ``_FORGET_WITHIN_S``) instead of paying for a commit of its own: if the agent dies
        first, those rows are sent once more after the restart, which the contract allows.
        """
        if not ids or self._closed:
            return
        with self._forget_lock:
            self._forget.extend(ids)
        if self._forget_timer is None:
            loop = asyncio.get_running_loop()
            self._forget_timer = loop.call_later(_FORGET_WITHIN_S, self._forget_now)

    def _forget_now(self) -> None:
        self._forget_timer = None
        if not self._closed:
            task = asyncio.get_running_loop().create_task(self.ping())
            task.add_done_callback(_ignore_result)

    async def get_value(self, agent_id: str, name: str) -> str | None:
        """Read a per-agent value."""

        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT value FROM kv WHERE agent_id = ? AND name = ?", (agent_id, name)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._submit(op)

    async def set_value(self, agent_id: str, name: str, value: str) -> None:
        """Write a per-agent value."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO kv (agent_id, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (agent_id, name) DO UPDATE SET value = excluded.value",
                (agent_id, name, value),
            )

        await self._submit(op)

    async def prune(self, finished_before: float) -> int:
        """Forget finished subtasks (and their stored replies) older than ``finished_before``."""

        def op(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM subtasks WHERE finished_at IS NOT NULL AND finished_at < ?",
                (finished_before,),
            )
            return int(cursor.rowcount)

        return await self._submit(op)

    async def ping(self) -> None:
        """Round trip through the writer thread."""
        await self._submit(lambda conn: None)

    async def close(self) -> None:
        """Let queued operations finish, then stop the writer."""
        if self._closed:
            return
        if self._forget_timer is not None:
            self._forget_timer.cancel()
            self._forget_timer = None
        await self.ping()  # also applies pending deletes
        self._closed = True
        self._hand_over()
        self._queue.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)


def _finish(
    conn: sqlite3.Connection, agent_id: str, key: str, finish: Finish, now: float
) -> list[OutboxItem]:
    cursor = conn.execute(
        "UPDATE subtasks SET state = ?, result = ?, updated_at = ?, finished_at = ?"
        " WHERE key = ? AND finished_at IS NULL",
        (finish.state, json.dumps(finish.result), now, now, key),
    )
    if cursor.rowcount != 1:
        msg = f"subtask {key!r} is not open"
        raise JournalError(msg)
    conn.executemany(
        "INSERT INTO replies (subtask_key, seq, topic, payload, qos) VALUES (?, ?, ?, ?, ?)",
        [(key, seq, p.topic, p.payload, p.qos) for seq, p in enumerate(finish.publishes)],
    )
    return _enqueue(conn, agent_id, key, finish.publishes, now)


def _enqueue(
    conn: sqlite3.Connection,
    agent_id: str,
    key: str | None,
    publishes: list[Publish],
    now: float,
) -> list[OutboxItem]:
    items = []
    for publish in publishes:
        cursor = conn.execute(
            "INSERT INTO outbox (agent_id, subtask_key, topic, payload, qos, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (agent_id, key, publish.topic, publish.payload, publish.qos, now),
        )
        row_id = cursor.lastrowid
        assert row_id is not None  # noqa: S101 - an INSERT always sets it
        items.append(OutboxItem(row_id, publish.topic, publish.payload, publish.qos))
    return items


def _archive(conn: sqlite3.Connection, key: str, archived: str) -> None:
    """Move a finished subtask, its replies and outbox rows to ``archived``."""
    conn.execute(
        "INSERT INTO subtasks (key, agent_id, device_id, kind, state, request, detail, result,"
        " received_at, updated_at, finished_at) SELECT ?, agent_id, device_id, kind, state,"
        " request, detail, result, received_at, updated_at, finished_at"
        " FROM subtasks WHERE key = ?",
        (archived, key),
    )
    conn.execute("UPDATE replies SET subtask_key = ? WHERE subtask_key = ?", (archived, key))
    conn.execute("UPDATE outbox SET subtask_key = ? WHERE subtask_key = ?", (archived, key))
    conn.execute("DELETE FROM subtasks WHERE key = ?", (key,))


def _requeue(conn: sqlite3.Connection, agent_id: str, key: str, now: float) -> list[OutboxItem]:
    rows = conn.execute(
        "SELECT topic, payload, qos FROM replies WHERE subtask_key = ? ORDER BY seq", (key,)
    ).fetchall()
    publishes = [Publish(topic=t, payload=bytes(p), qos=q) for t, p, q in rows]
    return _enqueue(conn, agent_id, key, publishes, now)

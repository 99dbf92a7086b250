"""The emulator's SQLite file: tasks, subtasks and registry objects, so a restart loses nothing.

Every statement runs on one worker thread (the event loop never waits on the disk). Task
creation and registry changes are committed before the API answers; subtask state changes are
written behind, batched into one transaction every ``flush_interval`` seconds and on close.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from agent.core.errors import JournalError
from agent.sim.emulator.records import Subtask, Task

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subtasks (
    task_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
"""

_TASK_FIELDS = tuple(f for f in Task.__dataclass_fields__ if f != "counts")
_SUBTASK_FIELDS = tuple(Subtask.__dataclass_fields__)


def _task_json(task: Task) -> str:
    return json.dumps({name: getattr(task, name) for name in _TASK_FIELDS})


def _subtask_row(sub: Subtask) -> tuple[str, int, str]:
    data = {name: getattr(sub, name) for name in _SUBTASK_FIELDS if name not in ("task_id", "seq")}
    return (sub.task_id, sub.seq, json.dumps(data))


class EmulatorStore:
    """Persistence for one emulator instance."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emulator-store")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Create or open the database."""
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        self._conn = conn

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn)
        except sqlite3.Error as exc:
            raise JournalError(f"emulator store {self.path}: {exc}") from exc

    def _tx(self, statements: Callable[[sqlite3.Connection], T]) -> Callable[[], T]:
        def run() -> T:
            conn = self._conn
            if conn is None:
                msg = "emulator store is not open"
                raise sqlite3.OperationalError(msg)
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = statements(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return run

    # -- tasks ----------------------------------------------------------------------------

    async def create_task(self, task: Task, subtasks: list[Subtask]) -> None:
        """Write a new task and all its subtasks in one transaction."""
        task_row = (task.task_id, _task_json(task))
        rows = [_subtask_row(s) for s in subtasks]

        def statements(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO tasks (task_id, data) VALUES (?, ?)", task_row)
            conn.executemany("INSERT INTO subtasks (task_id, seq, data) VALUES (?, ?, ?)", rows)

        await self._run(self._tx(statements))

    async def save(self, tasks: Iterable[Task], subtasks: Iterable[Subtask]) -> None:
        """Write changed tasks and subtasks (the engine's write-behind batch)."""
        task_rows = [(_task_json(t), t.task_id) for t in tasks]
        rows = [(data, task_id, seq) for task_id, seq, data in map(_subtask_row, subtasks)]

        def statements(conn: sqlite3.Connection) -> None:
            conn.executemany("UPDATE tasks SET data = ? WHERE task_id = ?", task_rows)
            conn.executemany("UPDATE subtasks SET data = ? WHERE task_id = ? AND seq = ?", rows)

        if task_rows or rows:
            await self._run(self._tx(statements))

    async def delete_task(self, task_id: str) -> None:
        """Forget a finished task."""

        def statements(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM subtasks WHERE task_id = ?", (task_id,))
            conn.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

        await self._run(self._tx(statements))

    async def load_tasks(self) -> list[tuple[Task, list[Subtask]]]:
        """Every stored task with its subtasks, oldest first."""

        def read() -> list[tuple[Task, list[Subtask]]]:
            assert self._conn is not None  # noqa: S101 - opened before use
            loaded: list[tuple[Task, list[Subtask]]] = []
            for task_id, data in self._conn.execute("SELECT task_id, data FROM tasks").fetchall():
                task = Task(**json.loads(data))
                subs = [
                    Subtask(task_id=task_id, seq=seq, **json.loads(sub))
                    for seq, sub in self._conn.execute(
                        "SELECT seq, data FROM subtasks WHERE task_id = ? ORDER BY seq", (task_id,)
                    )
                ]
                loaded.append((task, subs))
            loaded.sort(key=lambda pair: pair[0].created_at)
            return loaded

        return await self._run(read)

    # -- registry objects -----------------------------------------------------------------

    async def put_objects(self, kind: str, items: dict[str, dict[str, Any]]) -> None:
        """Insert or replace registry objects of one kind."""
        rows = [(kind, ident, json.dumps(data)) for ident, data in items.items()]

        def statements(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO objects (kind, id, data) VALUES (?, ?, ?)"
                " ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data",
                rows,
            )

        await self._run(self._tx(statements))

    async def delete_objects(self, kind: str, ids: Iterable[str]) -> None:
        """Remove registry objects."""
        rows = [(kind, ident) for ident in ids]

        def statements(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM objects WHERE kind = ? AND id = ?", rows)

        await self._run(self._tx(statements))

    async def load_objects(self, kind: str) -> dict[str, dict[str, Any]]:
        """All registry objects of one kind."""

        def read() -> dict[str, dict[str, Any]]:
            assert self._conn is not None  # noqa: S101
            rows = self._conn.execute("SELECT id, data FROM objects WHERE kind = ?", (kind,))
            return {ident: json.loads(data) for ident, data in rows}

        return await self._run(read)

    async def close(self) -> None:
        """Close the database and stop the worker."""

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(close)
        self._pool.shutdown(wait=True)


def device_data(device: Any) -> dict[str, Any]:
    """A registry dataclass as a JSON-able dict."""
    return asdict(device)

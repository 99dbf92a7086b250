"""Read-only views of the journal for `device-agent status` (safe while the daemon writes)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from agent.core.errors import JournalError
from agent.journal.base import OutboxSummary, SubtaskRow
from agent.journal.sqlite import connect


def read_status(
    path: Path, *, recent: int = 20
) -> tuple[list[SubtaskRow], list[SubtaskRow], OutboxSummary]:
    """Open subtasks, the most recent finished ones and the outbox backlog."""
    try:
        conn = connect(path, read_only=True)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read journal {path}: {exc}") from exc
    try:
        columns = "key, agent_id, device_id, kind, state, result, received_at, updated_at"
        open_rows = conn.execute(
            f"SELECT {columns} FROM subtasks WHERE finished_at IS NULL ORDER BY received_at"  # noqa: S608
        ).fetchall()
        recent_rows = conn.execute(
            f"SELECT {columns} FROM subtasks WHERE finished_at IS NOT NULL"  # noqa: S608
            " ORDER BY finished_at DESC LIMIT ?",
            (recent,),
        ).fetchall()
        count, oldest = conn.execute("SELECT count(*), min(created_at) FROM outbox").fetchone()
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read journal {path}: {exc}") from exc
    finally:
        conn.close()

    def row(values: tuple[Any, ...]) -> SubtaskRow:
        key, agent_id, device_id, kind, state, result, received, updated = values
        return SubtaskRow(
            key,
            agent_id,
            device_id,
            kind,
            state,
            None if result is None else json.loads(result),
            received,
            updated,
        )

    return [row(r) for r in open_rows], [row(r) for r in recent_rows], OutboxSummary(count, oldest)


# The key of the daemon's own record (agent/app/report.py writes it).
DAEMON_STATUS = "daemon_status"


def read_daemon(path: Path) -> dict[str, Any] | None:
    """The daemon's last record of itself (connection state, version, ...), or None."""
    try:
        conn = connect(path, read_only=True)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read journal {path}: {exc}") from exc
    try:
        row = conn.execute(
            "SELECT value FROM kv WHERE name = ? ORDER BY agent_id LIMIT 1", (DAEMON_STATUS,)
        ).fetchone()
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read journal {path}: {exc}") from exc
    finally:
        conn.close()
    if row is None:
        return None
    try:
        value = json.loads(row[0])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None

"""The journal's SQLite schema and its migrations, tracked in ``PRAGMA user_version``.

Migrations only ever append: a journal written by an older agent is brought forward in one
transaction; a journal from a newer agent is refused rather than misread.
"""

from __future__ import annotations

import sqlite3

from agent.core.errors import JournalError

MIGRATIONS: list[str] = [
    # 1: subtasks, the replies stored with them, the outbox and small per-agent values.
    """
    CREATE TABLE subtasks (
        key TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        request TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}',
        result TEXT,
        received_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX subtasks_open ON subtasks (agent_id) WHERE finished_at IS NULL;
    CREATE INDEX subtasks_finished ON subtasks (finished_at) WHERE finished_at IS NOT NULL;
    CREATE TABLE replies (
        subtask_key TEXT NOT NULL REFERENCES subtasks (key) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        PRIMARY KEY (subtask_key, seq)
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        agent_id TEXT NOT NULL,
        subtask_key TEXT,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX outbox_agent ON outbox (agent_id, id);
    CREATE TABLE kv (
        agent_id TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (agent_id, name)
    );
    """,
]

LATEST = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to :data:`LATEST`; returns the version found before.

    Raises:
        JournalError: the journal was written by a newer agent.
    """
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > LATEST:
        msg = f"journal schema version {found} is newer than this agent's ({LATEST})"
        raise JournalError(msg)
    if found == LATEST:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated while we waited for the write lock: look again.
        current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if current > LATEST:
            msg = f"journal schema version {current} is newer than this agent's ({LATEST})"
            raise JournalError(msg)
        for version in range(current, LATEST):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {LATEST}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found

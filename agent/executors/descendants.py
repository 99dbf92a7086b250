"""A handler's descendants, found and stopped even when they left its session (Linux).

A process group is not enough: anything a handler starts may call ``setsid`` and leave it. So
each handler gets a token in its environment (``DEVICE_AGENT_HANDLER_TOKEN``), which everything
it starts inherits, and the daemon makes itself the *child subreaper* of its processes
(``prctl(PR_SET_CHILD_SUBREAPER)``): what a handler leaves behind is reparented to the agent
instead of to init. A handler's processes are those in its session, those whose environment
holds its token, and every descendant of either (by parent pid, read from ``/proc``).

They are all stopped at the handler's deadline, once the handler has exited if one of them
still holds its output, and when the agent stops; the agent reaps the ones reparented to it.
(A descendant that both leaves the session and clears its environment can only be found while
its parent chain is intact; the service's cgroup still ends it when systemd stops the unit.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import uuid
from pathlib import Path

TOKEN_VARIABLE = "DEVICE_AGENT_HANDLER_TOKEN"  # noqa: S105 - a variable name, no secret
_PR_SET_CHILD_SUBREAPER = 36
_PROC = Path("/proc")
# Every token of this process starts with this: the agent's stop finds all of its handlers'.
_PREFIX = uuid.uuid4().hex[:12]
# Handlers running now: their exit belongs to asyncio's child watcher, never reaped here.
_running: set[int] = set()
_state = {"subreaper": False}


def become_subreaper() -> bool:
    """Make this process the child subreaper of its descendants; False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        ok = bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        ok = False
    _state["subreaper"] = ok
    return ok


def new_token() -> str:
    """A token for one handler run."""
    return f"{_PREFIX}.{uuid.uuid4().hex[:16]}"


def started(pid: int) -> None:
    """A handler process started (asyncio reaps it)."""
    _running.add(pid)


def ended(pid: int) -> None:
    """A handler process was reaped by asyncio; reap what it left that has ended."""
    _running.discard(pid)
    if _state["subreaper"]:
        reap_orphans()


def _table() -> dict[int, tuple[int, int, str]]:
    """Pid -> (parent pid, session id, state) of every process that can be read."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in _PROC.iterdir() if _PROC.is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        with contextlib.suppress(IndexError, ValueError):
            table[int(entry.name)] = (int(fields[1]), int(fields[3]), fields[0])
    return table


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return any(item.startswith(needle) for item in environ.split(b"\0"))


def members(root: int, token: str) -> set[int]:
    """The live processes of the handler ``root`` (itself included while it runs)."""
    table = _table()
    needle = f"{TOKEN_VARIABLE}={token}".encode()
    found = {pid for pid, (_, sid, _) in table.items() if sid == root}
    found |= {pid for pid in table if pid != os.getpid() and _environ_has(pid, needle)}
    if root in table:
        found.add(root)
    return _with_descendants(found, table)


def _with_descendants(found: set[int], table: dict[int, tuple[int, int, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    found.discard(os.getpid())
    found.discard(1)
    return {pid for pid in found if table[pid][2] != "Z"}


def _signal(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def reap_orphans() -> int:
    """Reap ended processes reparented to this one (never a running handler's); how many."""
    me = os.getpid()
    reaped = 0
    for pid, (ppid, _, state) in _table().items():
        if ppid == me and state == "Z" and pid not in _running:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
                reaped += 1
    return reaped


async def stop_members(
    root: int, token: str, exited: asyncio.Future[None] | None, grace_s: float
) -> int:
    """SIGTERM every process of the handler, SIGKILL what is left after the grace; how many.

    ``exited`` (the handler's own exit) ends the grace early once nothing else is left.
    """
    pids = await asyncio.to_thread(members, root, token)
    if not pids:
        return 0
    _signal(pids, signal.SIGTERM)
    # Polled: processes of other sessions offer nothing to wait on.
    for _ in range(int(grace_s / 0.05)):
        await asyncio.sleep(0.05)
        if not await asyncio.to_thread(members, root, token):
            break
    # Collected again: what they forked meanwhile goes too.
    left = await asyncio.to_thread(members, root, token)
    _signal(left | pids, signal.SIGKILL)
    if exited is not None and not exited.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), 5.0)
    if _state["subreaper"]:
        await asyncio.to_thread(reap_orphans)
    return len(pids | left)


async def stop_all() -> int:
    """SIGKILL every process any handler of this agent left behind (the agent is stopping)."""
    table = await asyncio.to_thread(_table)
    needle = f"{TOKEN_VARIABLE}={_PREFIX}.".encode()
    me = os.getpid()
    found = {pid for pid in table if pid != me and _environ_has(pid, needle)}
    found |= {pid for pid, (ppid, _, _) in table.items() if ppid == me and pid not in _running}
    found = _with_descendants(found, table)
    _signal(found, signal.SIGKILL)
    if _state["subreaper"] and found:
        for _ in range(40):  # at most about 2 s: SIGKILL takes effect at once, or never
            if not await asyncio.to_thread(members_alive, found):
                break
            await asyncio.sleep(0.05)
        await asyncio.to_thread(reap_orphans)
    return len(found)


def members_alive(pids: set[int]) -> bool:
    """Whether any of ``pids`` still runs (a zombie does not)."""
    table = _table()
    return any(pid in table and table[pid][2] != "Z" for pid in pids)

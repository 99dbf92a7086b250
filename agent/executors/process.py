"""Running an allow-listed handler executable: argv (never a shell), JSON on stdin, a deadline.

The handler gets a session of its own, so at the deadline the whole process group (the
handler and anything it started) is sent SIGTERM and, after a short grace, SIGKILL. Output is
captured up to a cap and the rest drained, so a chatty handler can neither block on a full pipe
nor make the agent's memory grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import handler_problem, interpreter_problem, script_problem
from agent.errors import ExecutionError
from agent.model import ResultCode

# Handlers start from a clean environment: nothing of the agent's (credentials included) leaks.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_STDERR_TAIL = 2048


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    """What a handler did: exit status (None when killed), captured output, whether it overran."""

    exit_code: int | None
    stdout: bytes
    stdout_truncated: bool
    stderr_tail: str
    timed_out: bool


async def _read_capped(stream: asyncio.StreamReader | None, cap: int) -> tuple[bytes, bool]:
    """Read a stream to EOF, keeping the first ``cap`` bytes."""
    if stream is None:
        return b"", False
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        if room > 0:
            kept += chunk[:room]
        if len(chunk) > room:
            truncated = True
    return bytes(kept), truncated


async def _feed(stdin: asyncio.StreamWriter | None, data: bytes) -> None:
    if stdin is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.close()
        await stdin.wait_closed()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def run_process(
    argv: list[str],
    *,
    stdin: bytes,
    env: Mapping[str, str],
    timeout_s: float,
    kill_grace_s: float,
    max_output_bytes: int,
    allowed_dirs: list[Path],
    script: str | None = None,
) -> ProcessOutcome:
    """Run one handler to completion or to its deadline.

    With ``script``, ``argv[0]`` is its interpreter: the script is what must be allow-listed.

    Raises:
        ExecutionError: the program is not allow-listed (any more) or cannot be started.
    """
    if script is None:
        what, problem = argv[0], handler_problem(argv[0], allowed_dirs)
    else:
        what, problem = script, script_problem(script, allowed_dirs)
        if problem is None:
            what, problem = argv[0], interpreter_problem(argv[0])
    if problem:
        raise ExecutionError(f"handler {what} {problem}", code=ResultCode.HANDLER_UNAVAILABLE)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**BASE_ENV, **env},
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise ExecutionError(
            f"cannot start {argv[0]}: {exc.strerror}", code=ResultCode.HANDLER_UNAVAILABLE
        ) from exc
    io: asyncio.Future[Any] = asyncio.gather(
        _feed(proc.stdin, stdin),
        _read_capped(proc.stdout, max_output_bytes),
        _read_capped(proc.stderr, _STDERR_TAIL * 8),
        proc.wait(),
    )
    timed_out = False
    try:
        _, (out, truncated), (err, _), _ = await asyncio.wait_for(asyncio.shield(io), timeout_s)
    except TimeoutError:
        timed_out = True
        out, truncated, err = await _stop_group(proc, io, kill_grace_s)
    except asyncio.CancelledError:
        # The agent is stopping: the handler must not outlive the subtask it belongs to.
        await _stop_group(proc, io, kill_grace_s)
        raise
    return ProcessOutcome(
        exit_code=None if timed_out else proc.returncode,
        stdout=out,
        stdout_truncated=truncated,
        stderr_tail=err[-_STDERR_TAIL:].decode("utf-8", "replace"),
        timed_out=timed_out,
    )


async def _stop_group(
    proc: asyncio.subprocess.Process, io: asyncio.Future[Any], grace_s: float
) -> tuple[bytes, bool, bytes]:
    """SIGTERM the handler's process group, SIGKILL it after the grace, collect what it wrote."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(io), grace_s)
    _signal_group(proc.pid, signal.SIGKILL)
    try:
        _, (out, truncated), (err, _), _ = await asyncio.wait_for(io, 5.0)
    except TimeoutError:
        return b"", False, b""
    return out, truncated, err

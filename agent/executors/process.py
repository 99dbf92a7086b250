"""Running an allow-listed handler executable: argv (never a shell), JSON on stdin, a deadline.

The handler gets a session of its own and a token in its environment, so at the deadline every
process of it (the handler and anything it started, also what left its session: see
:mod:`agent.executors.descendants`) is sent SIGTERM and, after a short grace, SIGKILL. Output
is captured up to a cap and the rest drained, so a chatty handler can neither block on a full
pipe nor make the agent's memory grow. A handler is done when it exits: anything it left
running that still holds its output is stopped rather than waited for (detach by redirecting
output; what is detached is stopped when the agent stops).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import handler_problem, interpreter_problem, script_problem
from agent.core.errors import ExecutionError
from agent.core.model import ResultCode
from agent.executors import descendants

# Handlers start from a clean environment: nothing of the agent's (credentials included) leaks.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_STDERR_TAIL = 2048
# Once the handler has exited, its output has this long to reach end-of-file. Longer means
# something it started in the background still holds the pipes: that is stopped, not waited for.
_PIPE_GRACE_S = 1.0


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


async def _read_tail(stream: asyncio.StreamReader | None, keep: int) -> bytes:
    """Read a stream to EOF, keeping the last ``keep`` bytes (where an error message ends up)."""
    if stream is None:
        return b""
    tail = bytearray()
    while chunk := await stream.read(65536):
        tail += chunk
        del tail[:-keep]
    return bytes(tail)


async def _feed(stdin: asyncio.StreamWriter | None, data: bytes) -> None:
    if stdin is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.close()
        await stdin.wait_closed()


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that also says when the process itself has exited.

    ``Process.wait()`` only returns once every pipe is closed as well, which never happens while
    something the handler left running holds them.
    """

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def _within(future: asyncio.Future[Any], timeout: float) -> bool:
    """Whether ``future`` completes within ``timeout`` (it keeps running either way)."""
    try:
        await asyncio.wait_for(asyncio.shield(future), timeout)
    except TimeoutError:
        return False
    return True


def _check_allowed(argv: list[str], allowed_dirs: list[Path], script: str | None) -> None:
    """Raise unless the program (or, for a script task, the script and interpreter) may run."""
    if script is None:
        what, problem = argv[0], handler_problem(argv[0], allowed_dirs)
    else:
        what, problem = script, script_problem(script, allowed_dirs)
        if problem is None:
            what, problem = argv[0], interpreter_problem(argv[0])
    if problem:
        raise ExecutionError(f"handler {what} {problem}", code=ResultCode.HANDLER_UNAVAILABLE)


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
    _check_allowed(argv, allowed_dirs, script)
    loop = asyncio.get_running_loop()
    token = descendants.new_token()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(limit=2**16, loop=loop),
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**BASE_ENV, **env, descendants.TOKEN_VARIABLE: token},
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
    except (OSError, ValueError) as exc:  # ValueError: a NUL in an argument or the environment
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ExecutionError(
            f"cannot start {argv[0]}: {reason}", code=ResultCode.HANDLER_UNAVAILABLE
        ) from exc
    proc = asyncio.subprocess.Process(transport, protocol, loop)
    descendants.started(proc.pid)
    feed = asyncio.ensure_future(_feed(proc.stdin, stdin))
    output: asyncio.Future[tuple[tuple[bytes, bool], bytes]] = asyncio.gather(
        _read_capped(proc.stdout, max_output_bytes), _read_tail(proc.stderr, _STDERR_TAIL)
    )
    timed_out = False
    try:
        if not await _within(protocol.exited, timeout_s):
            timed_out = True
            await descendants.stop_members(proc.pid, token, protocol.exited, kill_grace_s)
        if not await _within(output, _PIPE_GRACE_S):
            # The handler is gone but what it started still holds its output: stop that too,
            # wherever it went (a setsid child is outside the process group).
            await descendants.stop_members(proc.pid, token, None, 0.0)
            await _within(output, 5.0)
    except asyncio.CancelledError:
        # The agent is stopping: the handler must not outlive the subtask it belongs to.
        await descendants.stop_members(proc.pid, token, protocol.exited, kill_grace_s)
        raise
    finally:
        if protocol.exited.done():
            descendants.ended(proc.pid)
        for pending in (feed, output):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(feed, output, return_exceptions=True)
        if not output.cancelled() and output.exception() is None:
            (out, truncated), err = output.result()
        else:
            out, truncated, err = b"", False, b""
    return ProcessOutcome(
        exit_code=None if timed_out else transport.get_returncode(),
        stdout=out,
        stdout_truncated=truncated,
        stderr_tail=err.decode("utf-8", "replace"),
        timed_out=timed_out,
    )

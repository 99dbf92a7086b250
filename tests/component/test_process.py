"""Running handler executables: stdin, a clean environment, capped output, deadlines, exits."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.core.errors import ExecutionError
from agent.core.model import ResultCode
from agent.executors.process import BASE_ENV, ProcessOutcome, run_process
from tests.support.agents import process_alive, write_handler
from tests.support.fakes import until

CAP = 4096


@pytest.fixture(name="handlers")
def _handlers(tmp_path: Path) -> Path:
    return tmp_path / "handlers"


async def _run(
    program: Path,
    *,
    stdin: bytes = b"{}",
    env: dict[str, str] | None = None,
    timeout_s: float = 20.0,
    kill_grace_s: float = 0.5,
    argv: list[str] | None = None,
) -> ProcessOutcome:
    return await run_process(
        [str(program), *(argv or [])],
        stdin=stdin,
        env=env or {},
        timeout_s=timeout_s,
        kill_grace_s=kill_grace_s,
        max_output_bytes=CAP,
        allowed_dirs=[program.parent],
    )


async def test_stdin_reaches_the_handler_byte_for_byte(handlers: Path) -> None:
    """What the agent writes on stdin is what the handler reads, binary included."""
    program = write_handler(
        handlers, "cat", "import sys\nsys.stdout.buffer.write(sys.stdin.buffer.read())\n"
    )
    data = bytes(range(256)) * 8

    outcome = await _run(program, stdin=data)

    assert outcome.stdout == data
    assert outcome.exit_code == 0
    assert not outcome.timed_out


async def test_a_handler_that_ignores_a_large_stdin_still_completes(handlers: Path) -> None:
    """A handler that never reads its (pipe-filling) input does not hang the agent."""
    program = write_handler(handlers, "deaf", "print('{}')\n")

    outcome = await _run(program, stdin=b"x" * 1_000_000)

    assert outcome.exit_code == 0
    assert outcome.stdout.strip() == b"{}"


async def test_environment_holds_only_the_base_the_configured_and_the_context(
    handlers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of the agent's own environment reaches a handler."""
    monkeypatch.setenv("AGENT_ONLY_SECRET", "must-not-leak")
    monkeypatch.setenv("DEVICE_AGENT_MQTT__HOST", "must-not-leak-either")
    program = write_handler(
        handlers, "env", "import json, os\nprint(json.dumps(dict(os.environ)))\n"
    )
    given = {"CONFIGURED": "yes", "DEVICE_AGENT_REQUEST_ID": "r-1"}

    outcome = await _run(program, env=given)

    seen = json.loads(outcome.stdout)
    # The one variable of the agent's own: the token that marks this handler's processes.
    assert seen.pop("DEVICE_AGENT_HANDLER_TOKEN")
    assert seen == {**BASE_ENV, **given}


async def test_the_handler_runs_from_the_root_directory(handlers: Path) -> None:
    """Handlers start in / whatever the agent's working directory is."""
    program = write_handler(handlers, "pwd", "import os\nprint(os.getcwd())\n")

    outcome = await _run(program)

    assert outcome.stdout.strip() == b"/"


@pytest.mark.parametrize(("size", "truncated"), [(CAP, False), (CAP + 1, True), (2_000_000, True)])
async def test_output_is_capped_and_the_rest_drained(
    handlers: Path, size: int, truncated: bool
) -> None:
    """Up to the cap is kept; more is read and dropped so the handler never blocks on it."""
    program = write_handler(
        handlers, "chatty", f"import sys\nsys.stdout.write('y' * {size})\nsys.stdout.flush()\n"
    )

    outcome = await _run(program)

    assert outcome.stdout == b"y" * min(size, CAP)
    assert outcome.stdout_truncated is truncated
    assert outcome.exit_code == 0


async def test_the_end_of_stderr_is_kept(handlers: Path) -> None:
    """The last part of stderr is kept for the log; earlier noise is dropped."""
    program = write_handler(
        handlers,
        "noisy",
        "import sys\nsys.stderr.write('x' * 100000 + 'THE END')\n",
    )

    outcome = await _run(program)

    assert outcome.stderr_tail.endswith("THE END")
    assert len(outcome.stderr_tail) <= 2048


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("import sys\nsys.exit(0)\n", 0),
        ("import sys\nsys.exit(3)\n", 3),
        ("import sys\nsys.exit(255)\n", 255),
        ("raise SystemExit('died')\n", 1),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", -9),
    ],
)
async def test_exit_status_is_reported(handlers: Path, body: str, code: int) -> None:
    """The handler's exit status (negative: the signal that ended it) is reported."""
    program = write_handler(handlers, "exit", body)

    outcome = await _run(program)

    assert outcome.exit_code == code
    assert not outcome.timed_out


HANGS_WITH_DESCENDANTS = """\
import os, signal, subprocess, sys, time
if len(sys.argv) > 1 and sys.argv[1] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(
    ["/bin/sh", "-c", "trap '' TERM; sleep 3600 & echo $!; wait"],
    stdout=subprocess.PIPE, text=True,
)
grandchild = int(child.stdout.readline())
with open(os.environ["PID_FILE"], "w") as fh:
    fh.write(f"{os.getpid()} {child.pid} {grandchild}\\n")
time.sleep(3600)
"""


@pytest.mark.parametrize("argv", [[], ["ignore-term"]])
async def test_timeout_kills_the_handler_and_all_its_descendants(
    handlers: Path, tmp_path: Path, argv: list[str]
) -> None:
    """At the deadline the whole process group goes, even parts that ignore SIGTERM."""
    program = write_handler(handlers, "hang", HANGS_WITH_DESCENDANTS)
    pid_file = tmp_path / "pids"

    outcome = await _run(
        program, env={"PID_FILE": str(pid_file)}, timeout_s=3.0, kill_grace_s=0.3, argv=argv
    )

    assert outcome.timed_out
    assert outcome.exit_code is None
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 3
    await until(lambda: not any(process_alive(p) for p in pids), "every process gone", 10)


LEAVES_A_LINGERER = """\
import subprocess
subprocess.Popen(["sleep", "3600"])  # inherits stdout and stderr, so they stay open
print('{"result_code": 0, "paras": {"started": true}}', flush=True)
"""


async def test_a_handler_that_exits_is_not_timed_out_by_what_it_left_running(
    handlers: Path,
) -> None:
    """A background process holding the handler's output does not turn success into a timeout."""
    program = write_handler(handlers, "lingering", LEAVES_A_LINGERER)

    outcome = await _run(program, timeout_s=15.0)

    assert not outcome.timed_out
    assert outcome.exit_code == 0
    assert json.loads(outcome.stdout) == {"result_code": 0, "paras": {"started": True}}


async def test_cancelling_a_run_kills_the_handler(handlers: Path, tmp_path: Path) -> None:
    """When the agent stops, the handler does not outlive its subtask."""
    program = write_handler(handlers, "hang", HANGS_WITH_DESCENDANTS)
    pid_file = tmp_path / "pids"
    run = asyncio.ensure_future(_run(program, env={"PID_FILE": str(pid_file)}, timeout_s=60))
    await until(lambda: pid_file.exists() and pid_file.read_text().endswith("\n"), "pids", 15)

    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    pids = [int(p) for p in pid_file.read_text().split()]
    await until(lambda: not any(process_alive(p) for p in pids), "every process gone", 10)


async def test_a_handler_removed_from_the_allow_list_is_not_run(
    handlers: Path, tmp_path: Path
) -> None:
    """The allow-list is checked again at every run, not only at start-up."""
    program = write_handler(handlers, "tool", "print('{}')\n")

    with pytest.raises(ExecutionError, match="not inside an allowed directory") as caught:
        await run_process(
            [str(program)],
            stdin=b"",
            env={},
            timeout_s=5,
            kill_grace_s=0.5,
            max_output_bytes=CAP,
            allowed_dirs=[tmp_path / "elsewhere"],
        )

    assert caught.value.code == ResultCode.HANDLER_UNAVAILABLE


@pytest.mark.parametrize(
    ("body", "env", "reason"),
    [
        ("#!/nonexistent/interpreter\n", {}, "cannot start"),
        ("#!/bin/sh\nexit 0\n", {"BAD": "a\x00b"}, "cannot start"),
    ],
)
async def test_a_handler_that_cannot_start_is_an_execution_error(
    handlers: Path, body: str, env: dict[str, str], reason: str
) -> None:
    """A broken interpreter line or an impossible environment fails cleanly, not with a crash."""
    program = write_handler(handlers, "broken", "")
    program.write_text(body)

    with pytest.raises(ExecutionError, match=reason) as caught:
        await _run(program, env=env)

    assert caught.value.code == ResultCode.HANDLER_UNAVAILABLE

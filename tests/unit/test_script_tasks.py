"""Script tasks (WeData Shell 35 / Python 30): TaskExt as environment, refusals, deadlines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.config import CommandSettings
from agent.core.model import CommandRequest, CommandResponse, ResultCode
from agent.executors.command import CommandExecutor
from agent.executors.script import TASK_EXT_PREFIX, TaskExtError, task_ext_env
from agent.pipeline.executor import Context
from tests.support.recording import RecordingLog

SHELL_SCRIPT = """\
touch "$MARKER"
printf '{"result_code": 0, "paras": {"aa": "%s", "stdin": %s}}' "$DEVICE_AGENT_TASK_EXT_aa" "$(cat)"
"""
PYTHON_SCRIPT = """\
import json, os, sys
open(os.environ["MARKER"], "w").close()
ext = {k: v for k, v in os.environ.items() if k.startswith("DEVICE_AGENT_TASK_EXT_")}
print(json.dumps({"paras": {"ext": ext, "flags": sys.flags.isolated}}))
"""
SLEEPY_SCRIPT = "sleep 30\n"


class TestTaskExtNames:
    def test_wedata_list_and_object_forms_become_prefixed_variables(self) -> None:
        """Both TaskExt shapes give DEVICE_AGENT_TASK_EXT_{Key}; numbers become text."""
        wedata = {"TaskExt": [{"Key": "aa", "Value": "vv"}, {"Key": "Batch_2", "Value": 7}]}

        assert task_ext_env(wedata) == {
            f"{TASK_EXT_PREFIX}aa": "vv",
            f"{TASK_EXT_PREFIX}Batch_2": "7",
        }
        assert task_ext_env({"TaskExt": {"aa": "vv"}}) == {f"{TASK_EXT_PREFIX}aa": "vv"}
        assert task_ext_env({"other": 1}) == {}

    @pytest.mark.parametrize(
        ("task_ext", "reason"),
        [
            ([{"Key": "PATH", "Value": "/tmp"}], "programs act on"),
            ([{"Key": "path", "Value": "/tmp"}], "programs act on"),
            ([{"Key": "LD_PRELOAD", "Value": "/tmp/evil.so"}], "programs act on"),
            ([{"Key": "LD_LIBRARY_PATH", "Value": "/tmp"}], "programs act on"),
            ([{"Key": "PYTHONPATH", "Value": "/tmp"}], "programs act on"),
            ([{"Key": "BASH_ENV", "Value": "/tmp/x"}], "programs act on"),
            ([{"Key": "IFS", "Value": "x"}], "programs act on"),
            ([{"Key": "A=B", "Value": "x"}], "no '='"),
            ([{"Key": "A\x00B", "Value": "x"}], "no NUL"),
            ([{"Key": "", "Value": "x"}], "refused"),
            ([{"Key": "1abc", "Value": "x"}], "starting with a letter"),
            ([{"Key": "a b", "Value": "x"}], "refused"),
            ([{"Key": "x" * 65, "Value": "x"}], "1-64"),
            ([{"Key": 5, "Value": "x"}], "not a string"),
            ([{"Key": "aa", "Value": "x\x00y"}], "contains NUL"),
            ([{"Key": "aa", "Value": ["x"]}], "string or a number"),
            ([{"Key": "aa", "Value": True}], "string or a number"),
            ([{"Key": "aa", "Value": "x" * 5000}], "exceeds 4096"),
            ([{"Key": "aa", "Value": "1"}, {"Key": "AA", "Value": "2"}], "twice"),
            ([{"Key": "aa"}], "exactly 'Key' and 'Value'"),
            ("aa=vv", "must be a list"),
            ([{"Key": f"k{i}", "Value": "v"} for i in range(65)], "at most 64"),
        ],
    )
    def test_hostile_or_malformed_pairs_are_refused_with_a_clear_reason(
        self, task_ext: Any, reason: str
    ) -> None:
        """PATH, LD_PRELOAD, names with '=' or NUL and bad values are refused, saying why."""
        with pytest.raises(TaskExtError, match=reason):
            task_ext_env({"TaskExt": task_ext})


class _Fixture:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "scripts"
        self.dir.mkdir()
        self.marker = tmp_path / "ran"

    def script(self, name: str, body: str) -> Path:
        path = self.dir / name
        path.write_text(body)
        path.chmod(0o644)  # scripts are read by their interpreter, not executed
        return path

    def executor(self, handler: dict[str, Any]) -> CommandExecutor:
        settings = CommandSettings.model_validate(
            {
                "allowed_dirs": [str(self.dir)],
                "kill_grace_s": 0.2,
                "routes": [
                    {
                        "command_name": "RUN",
                        "handler": {
                            "kind": "script",
                            "env": {"MARKER": str(self.marker)},
                            **handler,
                        },
                    }
                ],
            }
        )
        return CommandExecutor(settings)

    async def run(self, executor: CommandExecutor, paras: dict[str, Any]) -> CommandResponse:
        request = CommandRequest(
            key="k", device_id="d", correlation="c", command_name="RUN", paras=paras
        )
        ctx = Context(agent_id="d", received_at=0.0, log=RecordingLog(), uplink=None)  # type: ignore[arg-type]
        outcome = await executor.execute(request, ctx)
        (reply,) = outcome.replies
        assert isinstance(reply, CommandResponse)
        return reply


@pytest.fixture
def scripts(tmp_path: Path) -> _Fixture:
    """A scripts directory (allow-listed) and a marker the scripts touch when they run."""
    return _Fixture(tmp_path)


async def test_shell_task_gets_task_ext_in_its_environment_never_in_a_command_line(
    scripts: _Fixture,
) -> None:
    """Type 35 runs with /bin/sh; a value full of shell syntax arrives as plain text."""
    script = scripts.script("task.sh", SHELL_SCRIPT)
    executor = scripts.executor({"task_type": 35, "script": str(script)})
    hostile = f"$(touch {scripts.dir}/pwned); `id` && rm -rf /nonexistent"

    reply = await scripts.run(executor, {"TaskExt": [{"Key": "aa", "Value": hostile}], "n": 1})

    assert reply.result.result_code == 0, reply.result
    assert reply.result.paras["aa"] == hostile
    assert reply.result.paras["stdin"]["n"] == 1  # paras on stdin, as for commands
    assert not (scripts.dir / "pwned").exists()


async def test_python_task_runs_isolated_with_task_ext(scripts: _Fixture) -> None:
    """Type 30 runs the script with Python in isolated mode; TaskExt arrives prefixed."""
    script = scripts.script("task.py", PYTHON_SCRIPT)
    executor = scripts.executor(
        {"task_type": 30, "script": str(script), "interpreter": sys.executable}
    )

    reply = await scripts.run(executor, {"TaskExt": {"region": "eu", "batch": 3}})

    assert reply.result.result_code == 0, reply.result
    assert reply.result.paras["ext"] == {
        f"{TASK_EXT_PREFIX}region": "eu",
        f"{TASK_EXT_PREFIX}batch": "3",
    }
    assert reply.result.paras["flags"] == 1


@pytest.mark.parametrize("key", ["PATH", "LD_PRELOAD", "A=B", "A\x00B"])
async def test_hostile_task_ext_is_refused_and_nothing_runs(scripts: _Fixture, key: str) -> None:
    """A refused TaskExt name fails the command as a bad request; the script never starts."""
    script = scripts.script("task.sh", SHELL_SCRIPT)
    executor = scripts.executor({"task_type": 35, "script": str(script)})

    reply = await scripts.run(executor, {"TaskExt": [{"Key": key, "Value": "x"}]})

    assert reply.result.result_code == ResultCode.BAD_REQUEST
    assert reply.result.paras["error"] == "bad_task_ext"
    assert "TaskExt key" in reply.result.paras["reason"]
    assert not scripts.marker.exists()


async def test_script_tasks_are_killed_at_their_deadline(scripts: _Fixture) -> None:
    """A script that overruns its deadline is killed and reported as a timeout."""
    script = scripts.script("slow.sh", SLEEPY_SCRIPT)
    executor = scripts.executor({"task_type": 35, "script": str(script), "timeout_s": 0.3})

    reply = await scripts.run(executor, {})

    assert reply.result.result_code == ResultCode.TIMEOUT


async def test_scripts_outside_the_allowed_directories_do_not_run(
    scripts: _Fixture, tmp_path: Path
) -> None:
    """The script, not the interpreter, is what the allow-list checks."""
    outside = tmp_path / "elsewhere.sh"
    outside.write_text(SHELL_SCRIPT)
    executor = scripts.executor({"task_type": 35, "script": str(outside)})

    reply = await scripts.run(executor, {})

    assert reply.result.result_code == ResultCode.HANDLER_UNAVAILABLE
    assert "not inside an allowed directory" in json.dumps(reply.result.paras)
    assert not scripts.marker.exists()

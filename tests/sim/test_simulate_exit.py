"""``simulate``'s exit status gates a rollout: 0 met, 1 missed or unfinished, 2 bad set-up."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest

from agent.sim.fleet.spec import ExpectSpec, load_scenario
from agent.sim.fleet.verdict import judge, miss
from tests.support.agents import REPO

SCENARIO = """
name = "gate"
timeout_s = {timeout_s}
[fleet]
journal = "memory"
[[fleet.cohorts]]
name = "unit"
count = 10
[[fleet.handlers]]
command_name = "PING"
latency_s = {latency_s}
failure_rate = {failure_rate}
[[tasks]]
name = "ping"
api = "huawei-iotda"
expect = {expect}
[tasks.body]
task_name = "ping"
task_type = "createCommands"
targets_filter = {{ group_ids = ["unit"] }}
document = {{ command_name = "PING" }}
"""


def _simulate(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "simulate", "--no-progress", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def _scenario(tmp_path: Path, **values: Any) -> Path:
    fields = {"timeout_s": 60, "latency_s": 0.0, "failure_rate": 0.0}
    fields |= {"expect": '{ status = "Success" }'} | values
    path = tmp_path / "gate.toml"
    path.write_text(SCENARIO.format(**fields))
    return path


def _report(tmp_path: Path) -> dict[str, Any]:
    return dict(json.loads((tmp_path / "run" / "report" / "report.json").read_text()))


def test_every_task_meeting_its_expectation_exits_0(tmp_path: Path) -> None:
    """Ten devices, every command succeeds: the task meets ``status = Success``."""
    result = _simulate(
        tmp_path, "--scenario", str(_scenario(tmp_path)), "--workdir", str(tmp_path / "run")
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "verdict: passed" in result.stdout
    assert _report(tmp_path)["verdict"] == {"passed": True, "missed": [], "not_checked": []}


def test_a_task_missing_its_success_ratio_exits_1_and_says_which(tmp_path: Path) -> None:
    """Every command fails: the report names the task, the expectation and what it got."""
    scenario = _scenario(tmp_path, failure_rate=1.0, expect="{ min_success_ratio = 0.97 }")
    result = _simulate(tmp_path, "--scenario", str(scenario), "--workdir", str(tmp_path / "run"))
    assert result.returncode == 1, result.stdout + result.stderr[-2000:]
    assert "verdict: FAILED: 1 task(s) missed their expectation" in result.stdout
    expected = "ping: expected at least 97.0% success, got 0.0% (success 0 of 10)"
    assert f"missed: {expected}" in result.stdout
    verdict = _report(tmp_path)["verdict"]
    assert verdict == {"passed": False, "missed": [expected], "not_checked": []}


def test_a_task_that_does_not_end_by_timeout_s_exits_1(tmp_path: Path) -> None:
    """Handlers slower than the scenario's timeout: the task is still processing at the end."""
    scenario = _scenario(tmp_path, timeout_s=2, latency_s=60.0)
    result = _simulate(tmp_path, "--scenario", str(scenario), "--workdir", str(tmp_path / "run"))
    assert result.returncode == 1, result.stdout + result.stderr[-2000:]
    assert "missed: ping: did not end within timeout_s (2 s): Processing (processing=10)" in (
        result.stdout
    )


def test_a_bad_scenario_exits_2(tmp_path: Path) -> None:
    """An unknown expectation key is a bad scenario: nothing runs, the key is named."""
    scenario = _scenario(tmp_path, expect="{ min_sucess_ratio = 0.9 }")
    result = _simulate(tmp_path, "--scenario", str(scenario))
    assert result.returncode == 2
    assert "tasks.0.expect.min_sucess_ratio" in result.stderr


def test_the_embedded_broker_refuses_a_fleet_larger_than_it_holds(tmp_path: Path) -> None:
    """One line naming --broker mosquitto, exit 2, before anything starts."""
    scenario = _scenario(tmp_path)
    result = _simulate(
        tmp_path, "--scenario", str(scenario), "--broker", "embedded", "--devices", "2000"
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "2000 agents are more than the embedded broker holds" in lines[0]
    assert "--broker mosquitto" in lines[0]


def test_expectations_judge_status_ratio_refusal_and_skips() -> None:
    """The verdict's reasons, task by task."""
    task = {
        "name": "t",
        "status": "PartialSuccess",
        "submit_error": None,
        "skipped": None,
        "task_progress": {"total": 100, "success": 96, "processing": 0},
    }
    assert miss(task, ExpectSpec(min_success_ratio=0.96), 60) is None
    assert miss(task, ExpectSpec(min_success_ratio=0.97), 60) == (
        "expected at least 97.0% success, got 96.0% (success 96 of 100)"
    )
    assert miss(task, ExpectSpec(status=["Success", "PartialSuccess"]), 60) is None
    assert miss(task, ExpectSpec(status="Success"), 60) == (
        "expected status Success, ended PartialSuccess (success 96 of 100)"
    )
    assert miss(task, None, 60) is None
    refused = task | {"status": None, "submit_error": "IOTDA.000006: bad"}
    assert miss(refused, None, 60) == "refused by the API: IOTDA.000006: bad"
    scenario = load_scenario(REPO / "agent" / "sim" / "scenarios" / "demo.toml")
    tasks = [
        task | {"name": spec.name, "status": "Success", "skipped": "not in this build"}
        for spec in scenario.tasks
    ]
    verdict = judge(scenario.tasks, tasks, 60)
    assert verdict["passed"] is True
    assert verdict["not_checked"] == [spec.name for spec in scenario.tasks]


def test_an_expectation_must_say_something() -> None:
    """``expect = {}`` would check nothing: it is refused."""
    with pytest.raises(ValueError, match="expect needs"):
        ExpectSpec()


def _line_with(stream: IO[str], text: str) -> str:
    """Read lines until one contains ``text`` (the caller's watchdog bounds the wait)."""
    seen = []
    while line := stream.readline():
        if text in line:
            return line
        seen.append(line)
    raise AssertionError(f"the output ended without {text!r}; it said:\n{''.join(seen)}")


def test_console_keeps_the_emulator_up_after_the_run_until_ctrl_c(tmp_path: Path) -> None:
    """``--console`` prints the page's URL; after the report the page and tasks stay served."""
    scenario = _scenario(tmp_path)
    command = [sys.executable, "-m", "agent", "simulate", "--no-progress", "--console"]
    with subprocess.Popen(
        [*command, "--scenario", str(scenario), "--workdir", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as process:
        assert process.stderr is not None
        assert process.stdout is not None
        watchdog = threading.Timer(120, process.kill)  # unblocks the reads if it hangs
        watchdog.start()
        try:
            url = _line_with(process.stderr, "console: http://127.0.0.1:").split()[-1]
            _line_with(process.stderr, "Ctrl-C to stop")
            # The run is over and reported, and the console is still served.
            assert "verdict: passed" in _line_with(process.stdout, "verdict:")
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
                assert b"/console/console.js" in response.read()
            with urllib.request.urlopen(f"{url}sim/v1/tasks", timeout=10) as response:  # noqa: S310
                (task,) = json.loads(response.read())["tasks"]
            assert task["status"] == "Success"
            assert task["task_progress"]["success"] == 10
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()

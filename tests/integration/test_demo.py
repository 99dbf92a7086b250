"""``device-agent demo`` (the fleet demo), its single-agent form and ``scripts/demo``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.agents import REPO

ANSWER_TOPIC = "$oc/devices/demo-device-0001/sys/commands/response/request_id=demo-req-1"


def _command_answer(stdout: str) -> dict[str, object]:
    """The device's answer to the demo's command, as printed."""
    lines = stdout.splitlines()
    for index, line in enumerate(lines):
        if line.strip() == f"device   -> {ANSWER_TOPIC}":
            answer: dict[str, object] = json.loads(lines[index + 1])
            return answer
    raise AssertionError(f"no answer to demo-req-1 in the output:\n{stdout}")


def _check(result: subprocess.CompletedProcess[str], workdir: Path) -> None:
    assert result.returncode == 0, result.stderr
    answer = _command_answer(result.stdout)
    assert answer["result_code"] == 0
    assert answer["response_name"] == "DEVICE_INFO"
    assert "spooled:" in result.stdout
    assert "journal: 3 subtasks finished, 0 open, 0 answers awaiting the broker" in result.stdout
    assert (workdir / "journal.db").exists()


def test_single_agent_demo_runs_to_completion_with_a_successful_command(tmp_path: Path) -> None:
    """The single-agent demo answers its sample command with result_code 0 and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--single-agent", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=90,
        check=False,
    )
    _check(result, tmp_path)


def test_scripts_demo_runs_the_fleet_demo_and_prints_the_report(tmp_path: Path) -> None:
    """``scripts/demo`` (the README's first command) runs the fleet demo to a report and plot."""
    script = (REPO / "scripts" / "demo").read_text()
    assert script.rstrip().endswith('exec .venv/bin/device-agent demo "$@"')
    result = subprocess.run(
        [str(REPO / "scripts" / "demo"), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    commands = next(line for line in lines if line.strip().startswith("meters: report interval"))
    assert "total=300" in commands
    assert any(line.strip().startswith("children: self test") for line in lines)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    meters = report["tasks"][0]
    # 3 % simulated failures with one retry: nearly all succeed; what fails is a handler failure.
    assert meters["status"] in ("Success", "PartialSuccess")
    assert meters["task_progress"]["success"] >= 290
    assert all(error.endswith("simulated_failure") for error in meters["errors"])
    assert report["fleet"]["agents"] == 342
    doors = next(task for task in report["tasks"] if task["name"] == "doors: shadow by filter")
    assert doors["status"] == "Success"
    assert doors["task_progress"]["total"] == 30
    # The gateway-mode firmware upgrade: two of the twenty children fail to install, and each
    # gateway fetched the package once for its ten children.
    firmware = next(task for task in report["tasks"] if task["name"] == "children: firmware")
    assert firmware["status"] == "PartialSuccess"
    progress = firmware["task_progress"]
    assert (progress["total"], progress["success"], progress["fail"]) == (20, 18, 2)
    assert list(firmware["errors"]) == [
        "10: upgrade package installation failure: simulated install failure"
    ]
    (package,) = report["downloads"]
    assert (package["package"], package["requests"], package["connections"]) == (
        "sensor-firmware",
        2,
        2,
    )
    assert any(line.strip().startswith("children: firmware") for line in lines)
    assert report["executions"]["repeated"] == []
    assert (tmp_path / "report" / "report.png").stat().st_size > 0

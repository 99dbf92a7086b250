"""``device-agent demo`` and ``scripts/demo``: run to completion and show a successful command."""

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


def test_device_agent_demo_runs_to_completion_with_a_successful_command(tmp_path: Path) -> None:
    """The demo command answers its sample command with result_code 0 and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=90,
        check=False,
    )
    _check(result, tmp_path)


def test_scripts_demo_wraps_the_demo_command(tmp_path: Path) -> None:
    """``scripts/demo`` (the README's first command) runs the same demo, passing arguments on."""
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
    _check(result, tmp_path)

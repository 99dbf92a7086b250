"""Whole simulations: a fault run on 300 devices, shards, network flaps and the report."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest

from agent.sim.fleet.options import RunOptions
from agent.sim.fleet.simulate import run_scenario
from agent.sim.fleet.spec import load_scenario
from agent.sim.mosquitto import Mosquitto
from tests.support.agents import REPO

ENDED = {"Success", "Fail", "PartialSuccess", "Stopped"}


def _check_every_task_ended_with_exact_counts(report: dict[str, Any]) -> None:
    for task in report["tasks"]:
        progress = task["task_progress"]
        assert task["status"] in ENDED, task
        assert progress["processing"] == progress["waitting"] == progress["fail_wait_retry"] == 0
        ended = progress["success"] + progress["fail"] + progress["stopped"] + progress["removed"]
        assert ended == progress["total"], task
    for point in report["progress"]:
        for terminal, success, total in point["tasks"].values():
            assert success <= terminal <= total


@pytest.mark.slow
@pytest.mark.broker
async def test_fault_run_ends_every_subtask_exactly_once(tmp_path: Path) -> None:
    """300 devices of three dialects, 3 broker restarts, 20 kills: all end, none runs twice."""
    scenario = load_scenario(REPO / "config" / "scenarios" / "fault-run.toml")
    report = await run_scenario(scenario, RunOptions(workdir=tmp_path, progress=False))

    assert report["fleet"]["devices"] == 300
    assert report["faults"]["broker_restarts"] == 3
    assert report["faults"]["agent_kills"] == 20
    _check_every_task_ended_with_exact_counts(report)
    by_name = {task["name"]: task for task in report["tasks"]}
    assert {task["api"] for task in report["tasks"]} == {
        "huawei-iotda",
        "tencent-iothub",
        "oceanconnect",
    }
    # Every subtask was answered by its device (a result or "interrupted"), never a timeout.
    for task in report["tasks"]:
        assert all(not code.startswith("TIMEOUT") for code in task["errors"]), task["errors"]
    assert by_name["tariff-notice"]["status"] == "Success"
    assert by_name["lock-doors"]["status"] == "Success"
    assert report["executions"]["repeated"] == []
    # No retries are configured: each command and message ran at most once, and every
    # successful command ran. (Desired state may be applied again after a reconnect: it is
    # idempotent by nature, so only commands and messages are counted.)
    runs = report["executions"]["by_kind"]
    commands = [t for t in report["tasks"] if t["task_type"] in ("createCommands", "DeviceCmd")]
    answered = sum(t["task_progress"]["success"] for t in commands)
    assert answered <= runs["command"] <= sum(t["task_progress"]["total"] for t in commands)
    assert runs["message"] <= by_name["tariff-notice"]["task_progress"]["total"]


async def test_network_flaps_and_the_report_files(tmp_path: Path) -> None:
    """On the embedded broker, with the network cut twice, tasks end and the report is written."""
    scenario_file = tmp_path / "flaps.toml"
    scenario_file.write_text(
        """
name = "flaps"
timeout_s = 60
minute_s = 1.0
[fleet]
[[fleet.cohorts]]
name = "unit"
count = 25
[[fleet.handlers]]
command_name = "PING"
latency_s = 0.3
[fleet.faults]
network_flaps = 2
start_s = 0.2
spread_s = 1.5
flap_down_s = 0.3
[[tasks]]
name = "ping"
api = "huawei-iotda"
[tasks.body]
task_name = "ping"
task_type = "createCommands"
targets_filter = { group_ids = ["unit"] }
document = { command_name = "PING" }
# A command to a device whose connection is down fails (IOTDA.014016), as on the platform:
# retries carry it over the flaps.
task_policy = { retry_count = 5, retry_interval = 1 }
[[tasks]]
name = "refused"
api = "huawei-iotda"
[tasks.body]
task_name = "not valid"
task_type = "createCommands"
targets = ["unit-00000"]
document = { command_name = "PING" }
"""
    )
    report = await run_scenario(
        load_scenario(scenario_file), RunOptions(workdir=tmp_path / "run", progress=False)
    )
    assert report["faults"]["network_flaps"] == 2
    assert report["fleet"]["passwords"] == "checked"  # the embedded broker checks CONNECTs
    ping, refused = report["tasks"]
    assert ping["status"] == "Success"
    assert ping["latency_s"]["p50"] is not None
    assert refused["submit_error"].startswith("IOTDA.000006")
    assert report["throughput_subtasks_per_s"] > 0
    assert report["executions"]["repeated"] == []
    written = json.loads(await asyncio.to_thread(Path(report["files"]["json"]).read_text))
    assert written["tasks"][0]["task_progress"]["success"] == 25
    png = await asyncio.to_thread(Path(report["files"]["png"]).read_bytes)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def _http_json(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """GET (or POST ``body``) a loopback URL and decode its JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return dict(json.loads(response.read()))


def _read_event(stream: IO[str], event: str, deadline: float) -> dict[str, Any]:
    """Read JSON lines until one has ``event`` (bounded by ``deadline``)."""
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            return dict(record)
    raise AssertionError(f"no {event} line before the deadline")


@pytest.mark.slow
@pytest.mark.broker
def test_two_shards_and_an_emulator_complete_one_task(
    tmp_path: Path, own_broker: Mosquitto
) -> None:
    """Two shard processes run half a fleet each; one task over the whole fleet succeeds."""
    scenario = tmp_path / "shards.toml"
    scenario.write_text(
        """
[fleet]
journal = "memory"
[[fleet.cohorts]]
name = "shard"
count = 40
[[fleet.handlers]]
command_name = "PING"
"""
    )
    python = [sys.executable, "-m", "agent"]
    env_cwd = {"cwd": str(REPO), "text": True}
    emulator = subprocess.Popen(
        [*python, "emulator", "--broker", own_broker.url, "--data-dir", str(tmp_path / "emu")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        **env_cwd,  # type: ignore[call-overload]
    )
    shards: list[subprocess.Popen[str]] = []
    try:
        assert emulator.stdout is not None
        url = _read_event(emulator.stdout, "emulator.ready", time.monotonic() + 30)["url"]
        for index in range(2):
            shards.append(
                subprocess.Popen(
                    [
                        *python,
                        "simulate",
                        "--scenario",
                        str(scenario),
                        "--emulator",
                        url,
                        "--broker",
                        own_broker.url,
                        "--shard",
                        f"{index}/2",
                        "--workdir",
                        str(tmp_path / f"shard-{index}"),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    **env_cwd,  # type: ignore[call-overload]
                )
            )
        for process in shards:
            assert process.stdout is not None
            ready = _read_event(process.stdout, "shard.ready", time.monotonic() + 60)
            assert ready["agents"] == 20
        body = {
            "task_name": "ping_everyone",
            "task_type": "createCommands",
            "targets_filter": {"group_ids": ["shard"]},
            "document": {"command_name": "PING"},
        }
        created = _http_json(f"{url}/v5/iot/p/batchtasks", body)
        assert created["task_progress"]["total"] == 40
        deadline = time.monotonic() + 60
        status = created["status"]
        while status not in ENDED and time.monotonic() < deadline:
            time.sleep(0.1)
            status = _http_json(f"{url}/v5/iot/p/batchtasks/{created['task_id']}")["batchtask"][
                "status"
            ]
        assert status == "Success"
        executed = 0
        for process in shards:
            process.send_signal(signal.SIGTERM)
            assert process.stdout is not None
            stopped = _read_event(process.stdout, "shard.stopped", time.monotonic() + 30)
            assert stopped["repeated"] == 0
            executed += stopped["executions"]
            assert process.wait(30) == 0
        assert executed == 40
    finally:
        for process in [*shards, emulator]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            if process.stdout is not None:
                process.stdout.close()


@pytest.mark.slow
@pytest.mark.broker
async def test_the_bundled_upgrade_rollout_passes_and_retried_upgrades_run_again(
    tmp_path: Path,
) -> None:
    """The upgrade scenario meets its goals, and every retry of a failed install runs.

    The platform's offer has no id, so only the earlier failure tells a retry from a re-push.
    """
    scenario = load_scenario(REPO / "config" / "scenarios" / "upgrades.toml")
    report = await run_scenario(scenario, RunOptions(workdir=tmp_path, progress=False))

    assert report["verdict"]["passed"], report["verdict"]
    _check_every_task_ended_with_exact_counts(report)
    assert report["executions"]["repeated"] == []
    upgrades = [t for t in report["tasks"] if "firmware" in t["name"] or "software" in t["name"]]
    firmware = next(t for t in upgrades if t["name"] == "meters: firmware")
    assert firmware["attempts"] > firmware["task_progress"]["total"]  # some were retried
    # Every attempt the platform made was executed once: retries too.
    assert report["executions"]["by_kind"]["upgrade"] == sum(t["attempts"] for t in upgrades)

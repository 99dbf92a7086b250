"""The demo scenario's mix at 2,000 devices on Mosquitto, and the broker settings it depends on."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.sim.cli import DEMO_SCENARIO
from agent.sim.fleet.broker import MosquittoHandle
from agent.sim.fleet.options import RunOptions
from agent.sim.fleet.simulate import run_scenario
from agent.sim.fleet.spec import load_scenario

ENDED = {"Success", "Fail", "PartialSuccess", "Stopped"}


def _config_lines(handle: MosquittoHandle) -> list[str]:
    return handle.mosquitto.config_path.read_text().splitlines()


@pytest.mark.broker
def test_mosquitto_writes_its_database_after_every_change_only_when_it_must(
    tmp_path: Path,
) -> None:
    """A full database write per message stalls a large fleet: only restart rehearsals pay it."""
    quick = _config_lines(MosquittoHandle(tmp_path / "quick"))
    assert "autosave_on_changes false" in quick
    durable = _config_lines(MosquittoHandle(tmp_path / "durable", durable=True))
    assert "autosave_on_changes true" in durable
    assert "autosave_interval 1" in durable


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.timeout(600)
async def test_the_demo_mix_at_2000_devices_ends_every_subtask_once(tmp_path: Path) -> None:
    """Handlers with latency, failures and a retry, shadows, a gateway upgrade, 2,000 meters."""
    scenario = load_scenario(DEMO_SCENARIO)
    cohorts = list(scenario.fleet.cohorts)
    assert cohorts[0].name == "meter"
    cohorts[0] = cohorts[0].model_copy(update={"count": 2000})
    scenario = scenario.model_copy(
        update={"fleet": scenario.fleet.model_copy(update={"cohorts": cohorts})}
    )
    report = await run_scenario(
        scenario, RunOptions(workdir=tmp_path, broker="mosquitto", progress=False)
    )

    assert report["fleet"]["broker"] == "mosquitto"
    assert report["fleet"]["agents"] == 2042
    tasks = {task["name"]: task for task in report["tasks"]}
    for task in tasks.values():
        progress = task["task_progress"]
        assert task["status"] in ENDED, task
        assert progress["processing"] == progress["waitting"] == progress["fail_wait_retry"] == 0
        assert not [code for code in task["errors"] if code.startswith("TIMEOUT")], task
    meters = tasks["meters: report interval"]
    assert meters["task_progress"]["total"] == 2000
    # What fails is the simulated handler's 3 %, twice in a row (retry_count 1).
    assert all(code.endswith("simulated_failure") for code in meters["errors"])
    assert tasks["children: self test"]["task_progress"]["total"] == 20
    assert tasks["doors: shadow by filter"]["status"] == "Success"
    firmware = tasks["children: firmware"]["task_progress"]
    assert (firmware["success"], firmware["fail"]) == (18, 2)
    # Every attempt the emulator made ran once on its device, and nothing else ran.
    executions = report["executions"]
    runs = executions["by_kind"]
    commands = meters["attempts"] + tasks["children: self test"]["attempts"]
    assert runs["command"] == commands
    assert runs["desired_state"] == tasks["doors: shadow by filter"]["attempts"]
    assert runs["upgrade"] == runs["version_query"] == tasks["children: firmware"]["attempts"]
    assert executions["total"] == sum(runs.values())
    assert executions["repeated"] == []

"""Fleet bench, the rehearsal people run: the demo scenario's mix at N meters on Mosquitto.

Handlers with latency (0.3 s, 3 % failures and a retry), commands to gateway children, a Tencent
shadow by name filter and a gateway-mode firmware upgrade, run by ``run_scenario`` exactly as
``device-agent simulate`` runs them, against the floor (bare aiomqtt clients doing one QoS 1
request/reply each, ../shared/tools/fleet_floor.py) on the same broker in the same process
tree. Reported: the time to connect, the time until every task has ended (100 % of expected
outcomes: the scenario's verdict), peak memory, and both against the floor. The target for the
time is 3x the floor's fan-out+reply time plus the scenario's own latencies (``handlers_s``),
which no broker can take away.
"""

from __future__ import annotations

import math
import resource
import tempfile
from pathlib import Path
from typing import Any

from agent.sim.cli import DEMO_SCENARIO
from agent.sim.fleet.options import RunOptions
from agent.sim.fleet.simulate import run_scenario
from agent.sim.fleet.spec import Scenario, TaskSpec, load_scenario
from agent.sim.mosquitto import Mosquitto


def scenario_at(meters: int) -> Scenario:
    """The demo scenario with ``meters`` devices in its first cohort."""
    scenario = load_scenario(DEMO_SCENARIO)
    cohorts = list(scenario.fleet.cohorts)
    cohorts[0] = cohorts[0].model_copy(update={"count": meters})
    return scenario.model_copy(
        update={"fleet": scenario.fleet.model_copy(update={"cohorts": cohorts})}
    )


def _task_latency(scenario: Scenario, task: TaskSpec) -> float:
    """The shortest a task can take on an infinitely fast broker: its own waits."""
    fleet = scenario.fleet
    body = task.body
    kind = str(body.get("task_type") or body.get("TaskType") or "")
    if kind == "createCommands":
        name = body.get("document", {}).get("command_name")
        groups = body.get("targets_filter", {}).get("group_ids", [])
        if any(str(g).endswith("-children") for g in groups):
            return task.at_s  # children's commands are answered by the gateway's adapter
        latency = max((h.latency_s for h in fleet.handlers if h.command_name == name), default=0)
        policy = body.get("task_policy", {})
        retries = int(policy.get("retry_count", 0))
        wait = float(policy.get("retry_interval", 0)) * scenario.minute_s
        return task.at_s + latency * (retries + 1) + wait * retries
    if kind == "UpdateShadow":
        return task.at_s + max((a.latency_s for a in fleet.appliers), default=0.0)
    if kind == "firmwareUpgrade" and body.get("task_mode") == "GATEWAY":
        children = max((c.children for c in fleet.cohorts), default=0)
        rounds = math.ceil(children / fleet.upgrades.install_concurrency)
        return task.at_s + rounds * fleet.upgrades.child_install_s
    return task.at_s


def handlers_s(scenario: Scenario) -> float:
    """The scenario's critical path of handler latency, retry waits and child installs."""
    return round(max((_task_latency(scenario, t) for t in scenario.tasks), default=0.0), 2)


def rss_kb() -> int:
    """Resident set size of this process, in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def run_demo(meters: int, floor: Path, mosquitto_extra: str) -> dict[str, Any]:
    """The floor, then the demo mix, on one Mosquitto."""
    from bench.fleet import run_floor

    scenario = scenario_at(meters)
    with tempfile.TemporaryDirectory(prefix="fleet-demo-") as tmp:
        workdir = Path(tmp)
        mosquitto = Mosquitto(
            workdir / "mosquitto", extra_config=mosquitto_extra, save_every_change=False
        )
        mosquitto.start()
        try:
            floor_result = run_floor(floor, meters, mosquitto.port)
            before = rss_kb()
            report = await run_scenario(
                scenario,
                RunOptions(workdir=workdir / "run", broker=mosquitto.url, progress=False),
            )
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        finally:
            mosquitto.stop()
    fleet = report["fleet"]
    tasks = {
        t["name"]: {
            "status": t["status"],
            "duration_s": t["duration_s"],
            "success": (t["task_progress"] or {}).get("success"),
            "total": (t["task_progress"] or {}).get("total"),
            "timeouts": sum(n for code, n in t["errors"].items() if code.startswith("TIMEOUT")),
        }
        for t in report["tasks"]
    }
    result: dict[str, Any] = {
        "meters": meters,
        "agents": fleet["agents"],
        "devices": fleet["devices"],
        "broker": "mosquitto",
        "connect_s": fleet["connect_s"],
        "seconds_to_all_ended": report["duration_s"],
        "handlers_s": handlers_s(scenario),
        "verdict": report["verdict"],
        "executions": report["executions"]["total"],
        "repeated_executions": len(report["executions"]["repeated"]),
        "tasks": tasks,
        "kb_per_agent_peak": round((peak - before) / fleet["agents"], 1),
        "floor": floor_result,
    }
    if floor_result and "connect_s" in floor_result:
        result["connect_vs_floor"] = round(
            fleet["connect_s"] / max(floor_result["connect_s"], 0.1), 2
        )
        target = 3 * floor_result["fanout_reply_s"] + result["handlers_s"]
        result["target_s"] = round(target, 1)
        result["time_vs_target"] = round(report["duration_s"] / target, 2)
        result["memory_vs_floor"] = round(
            result["kb_per_agent_peak"] / max(floor_result["kb_per_client"], 0.1), 2
        )
    return result

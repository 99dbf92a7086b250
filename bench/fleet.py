"""Fleet bench: N real agents and the task service emulator in one process, one batch task.

For each configuration it measures the time to connect the fleet, the memory per device (RSS
growth while the agents start and connect, divided by N), and the time from creating a task
that targets every device until it reaches 100 % Success. The floor is the same number of bare
aiomqtt clients doing one QoS 1 request/reply each (../shared/tools/fleet_floor.py), run
against the same broker first; ratios are against it.

Upgrades (``--upgrade-devices``, ``--upgrade-gateways`` x ``--upgrade-children``, on Mosquitto):
a ``firmwareUpgrade`` task over every device (children: ``task_mode: GATEWAY``) from the
emulator's package server, to 100 % Success, against a ``createCommands`` task over the same
targets in the same run (one exchange per subtask) as the baseline.

The demo mix (``--demo``, bench/fleet_demo.py): the bundled demo scenario at N meters, the
rehearsal people run (handler latency, failures and retries, shadows, a gateway upgrade), to the
end of every task, against the floor on the same broker.

Usage: python -m bench.fleet [--devices 10000] [--embedded 1000] [--demo 10000] [--floor PATH]
       [--upgrade-devices 1000] [--upgrade-gateways 20 --upgrade-children 50] [--package-kb 256]
       [--out bench/results/fleet.json]
Prints one JSON object. Measured on a shared 2-core machine: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.runtime.logging import configure_logging
from agent.sim.emulator.api_sim import register_fleet
from agent.sim.emulator.server import build_emulator
from agent.sim.emulator.service import Emulator
from agent.sim.emulator.settings import EmulatorSettings
from agent.sim.fleet.broker import BrokerHandle, EmbeddedHandle
from agent.sim.fleet.client import TaskClient
from agent.sim.fleet.layout import build_layout, registration
from agent.sim.fleet.runner import FleetRunner
from agent.sim.fleet.spec import ApplierSpec, CohortSpec, FleetSpec, HandlerSpec, TaskSpec
from agent.sim.mosquitto import Mosquitto

REPO = Path(__file__).resolve().parents[1]
# ../shared/tools/fleet_floor.py from the checkout, whether it is the main one or a worktree
# (whose parent is one level further down).
DEFAULT_FLOOR = next(
    (
        base / "shared" / "tools" / "fleet_floor.py"
        for base in REPO.parents
        if (base / "shared" / "tools" / "fleet_floor.py").exists()
    ),
    REPO.parent / "shared" / "tools" / "fleet_floor.py",
)
# Mosquitto for a large fleet: no per-client queue limits, long keepalives allowed.
MOSQUITTO_EXTRA = "max_keepalive 1200\nmemory_limit 0\n"


def rss_kb() -> int:
    """Resident set size of this process, in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one; returns the new soft limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def run_fleet(broker: BrokerHandle, devices: int, workdir: Path) -> dict[str, Any]:
    """One fleet, one createCommands task over every device."""
    emulator = build_emulator(
        EmulatorSettings(
            data_dir=workdir / "emulator",
            broker_url=broker.url,
            max_in_flight=5000,
            command_timeout_s=120,
        )
    )
    await emulator.start()
    await emulator.wait_connected(30)
    spec = FleetSpec(
        cohorts=[CohortSpec(name="bench", count=devices)],
        handlers=[HandlerSpec(command_name="PING")],
        appliers=[ApplierSpec(section="s")],
        connect_concurrency=256,
    )
    slots = build_layout(spec)
    await register_fleet(emulator, registration(slots, spec))
    before = rss_kb()
    runner = FleetRunner(spec, slots, host=broker.host, port=broker.port, workdir=workdir)
    started = time.perf_counter()
    await runner.start()
    await runner.wait_connected(max(120.0, devices * 0.05))
    connect_s = time.perf_counter() - started
    await asyncio.sleep(1.0)  # let connect-time allocations settle
    per_device_kb = (rss_kb() - before) / devices
    result: dict[str, Any] = {
        "devices": devices,
        "broker": broker.kind,
        "connect_s": round(connect_s, 1),
        "kb_per_device": round(per_device_kb, 1),
    }
    for task_type, document in (
        ("createCommands", {"command_name": "PING"}),
        ("updateDeviceShadows", {"shadow": [{"service_id": "s", "desired": {"v": 1}}]}),
    ):
        if not emulator.table.available("huawei-iotda", task_type):
            result[task_type] = "not carried out by the emulator in this build"
            continue
        from agent.sim.emulator.records import Task

        now = time.time()
        task = Task(
            task_id=emulator.new_id(),
            api="huawei-iotda",
            task_type=task_type,
            name=f"bench_{task_type}",
            account="bench",
            created_at=now,
            schedule_at=now,
            request={"document": document},
        )
        ended = asyncio.Event()

        def watch(seen: Task, _: object, task: Task = task, ended: asyncio.Event = ended) -> None:
            if seen is task and seen.terminal == seen.total:
                ended.set()

        emulator.engine.observers.append(watch)
        t0 = time.perf_counter()
        await emulator.engine.create(task, [slot.device.device_id for slot in slots])
        await ended.wait()
        elapsed = time.perf_counter() - t0
        result[task_type] = {
            "seconds_to_end": round(elapsed, 2),
            "status": task.status(time.time()),
            "success": task.counts["success"],
            "fail": task.counts["fail"],
            "subtasks_per_s": round(devices / elapsed),
            "repeated_executions": len(runner.executions.repeated()),
            "errors": sorted(
                {s.error_msg or "" for s in emulator.engine.subtasks[task.task_id] if s.error_msg}
            )[:5],
        }
    await runner.stop()
    await emulator.close()
    return result


async def _until_ended(emulator: Emulator, client: TaskClient, spec: TaskSpec) -> dict[str, Any]:
    """Submit a task through its API and wait until every subtask has ended."""
    ended = asyncio.Event()
    task_ids: set[str] = set()

    def watch(seen: Any, _: object) -> None:
        if seen.task_id in task_ids and seen.terminal == seen.total:
            ended.set()

    emulator.engine.observers.append(watch)
    t0 = time.perf_counter()
    answer = await client.submit(spec)
    if answer.task_id is None:
        return {"error": answer.error}
    task_ids.add(answer.task_id)
    task = emulator.engine.tasks[answer.task_id]
    if task.terminal < task.total:
        await ended.wait()
    elapsed = time.perf_counter() - t0
    emulator.engine.observers.remove(watch)
    return {
        "seconds_to_end": round(elapsed, 2),
        "status": task.status(time.time()),
        "success": task.counts["success"],
        "fail": task.counts["fail"],
        "subtasks_per_s": round(task.total / elapsed),
        "errors": sorted(
            {s.error_msg or "" for s in emulator.engine.subtasks[task.task_id] if s.error_msg}
        )[:5],
    }


async def run_upgrade(
    broker: BrokerHandle,
    workdir: Path,
    *,
    devices: int,
    gateways: int,
    children: int,
    package_kb: int,
) -> dict[str, Any]:
    """One fleet: a createCommands task (baseline), then a firmwareUpgrade, over every target."""
    emulator = build_emulator(
        EmulatorSettings(
            data_dir=workdir / "emulator",
            broker_url=broker.url,
            max_in_flight=5000,
            command_timeout_s=120,
            version_timeout_s=300,
        )
    )
    await emulator.start()
    await emulator.wait_connected(30)
    cohorts = []
    if devices:
        cohorts.append(CohortSpec(name="dev", count=devices))
    if gateways:
        cohorts.append(CohortSpec(name="gw", count=gateways, children=children))
    spec = FleetSpec(
        cohorts=cohorts, handlers=[HandlerSpec(command_name="PING")], connect_concurrency=256
    )
    slots = build_layout(spec)
    await register_fleet(emulator, registration(slots, spec))
    before = rss_kb()
    runner = FleetRunner(spec, slots, host=broker.host, port=broker.port, workdir=workdir)
    started = time.perf_counter()
    await runner.start()
    await runner.wait_connected(max(120.0, len(slots) * 0.05))
    connect_s = time.perf_counter() - started
    await asyncio.sleep(1.0)  # let connect-time allocations (and version reports) settle
    grown = rss_kb() - before
    targets = devices + gateways * children
    result: dict[str, Any] = {
        "agents": len(slots),
        "devices": targets,
        "broker": broker.kind,
        "connect_s": round(connect_s, 1),
        "kb_per_agent": round(grown / len(slots), 1),
        "kb_per_device": round(grown / (len(slots) + gateways * children), 1),
        "package_kb": package_kb,
    }
    data = os.urandom(1024) * package_kb
    package = await emulator.registry.add_package(
        data, name="bench.bin", version="2.0.0", package_type="firmwarePackage"
    )
    group = "gw-children" if gateways else "dev"
    client = TaskClient(emulator.url)
    common = {"targets_filter": {"group_ids": [group]}}
    commands = TaskSpec(
        name="commands",
        api="huawei-iotda",
        body={"task_name": "ping", "task_type": "createCommands",
              "document": {"command_name": "PING"}, **common},
    )  # fmt: skip
    upgrade_body = {
        "task_name": "firmware",
        "task_type": "firmwareUpgrade",
        "document": {"package_id": package.package_id},
        **common,
    }
    if gateways:
        upgrade_body["task_mode"] = "GATEWAY"
    upgrade = TaskSpec(name="firmware", api="huawei-iotda", body=upgrade_body)
    result["createCommands"] = await _until_ended(emulator, client, commands)
    result["firmwareUpgrade"] = await _until_ended(emulator, client, upgrade)
    per_connection = emulator.downloads.per_connection(package.package_id)
    result["firmwareUpgrade"]["downloads"] = sum(per_connection.values())
    result["firmwareUpgrade"]["downloading_connections"] = len(per_connection)
    result["firmwareUpgrade"]["repeated_executions"] = len(runner.executions.repeated())
    baseline = result["createCommands"].get("seconds_to_end")
    if baseline:
        result["upgrade_vs_commands"] = round(
            result["firmwareUpgrade"]["seconds_to_end"] / baseline, 2
        )
    await client.close()
    await runner.stop()
    await emulator.close()
    return result


def run_floor(floor: Path, devices: int, port: int) -> dict[str, Any] | None:
    """The floor: bare aiomqtt clients (needs aiomqtt; None when it or the script is missing)."""
    if not floor.exists():
        return None
    try:
        out = subprocess.run(
            [sys.executable, str(floor), str(devices), str(port)],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)[:200]}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


async def one(kind: str, devices: int, floor: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration in this process: ``mosquitto`` (with the floor first), ``embedded``,
    ``upgrade-devices`` or ``upgrade-gateways`` (both on Mosquitto)."""
    configure_logging("error", "console", stream=sys.stderr)
    raise_fd_limit()
    if kind == "demo":
        from bench.fleet_demo import run_demo

        return await run_demo(devices, floor, MOSQUITTO_EXTRA)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        workdir = Path(tmp)
        if kind.startswith("upgrade-"):
            mosquitto = Mosquitto(
                workdir / "mosquitto", extra_config=MOSQUITTO_EXTRA, save_every_change=False
            )
            mosquitto.start()
            try:
                broker = BrokerHandle("127.0.0.1", mosquitto.port, kind="mosquitto")
                gateways = args.upgrade_gateways if kind == "upgrade-gateways" else 0
                return await run_upgrade(
                    broker,
                    workdir / "run",
                    devices=devices if kind == "upgrade-devices" else 0,
                    gateways=gateways,
                    children=args.upgrade_children,
                    package_kb=args.package_kb,
                )
            finally:
                mosquitto.stop()
        if kind == "embedded":
            from agent.sim.mosquitto import free_port

            embedded = EmbeddedHandle(free_port())
            await embedded.start()
            try:
                return await run_fleet(embedded, devices, workdir)
            finally:
                await embedded.close()
        mosquitto = Mosquitto(
            workdir / "mosquitto", extra_config=MOSQUITTO_EXTRA, save_every_change=False
        )
        mosquitto.start()
        try:
            floor_result = run_floor(floor, devices, mosquitto.port)
            broker = BrokerHandle("127.0.0.1", mosquitto.port, kind="mosquitto")
            fleet = await run_fleet(broker, devices, workdir / "run")
        finally:
            mosquitto.stop()
    fleet["floor"] = floor_result
    if floor_result and "kb_per_client" in floor_result:
        fleet["memory_vs_floor"] = round(fleet["kb_per_device"] / floor_result["kb_per_client"], 2)
        commands = fleet.get("createCommands")
        if isinstance(commands, dict) and floor_result.get("fanout_reply_s"):
            fleet["time_vs_floor"] = round(
                commands["seconds_to_end"] / max(floor_result["fanout_reply_s"], 0.1), 2
            )
    return fleet


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Each configuration in a process of its own, so memory figures do not mix."""
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "fd_limit": raise_fd_limit(),
        "load_average_before": os.getloadavg(),
        "command": " ".join(["python -m bench.fleet", *sys.argv[1:]]),
    }
    for kind, devices in (
        ("mosquitto", args.devices),
        ("embedded", args.embedded),
        ("demo", args.demo),
        ("upgrade-devices", args.upgrade_devices),
        ("upgrade-gateways", args.upgrade_gateways * args.upgrade_children),
    ):
        if not devices:
            continue
        out = subprocess.run(
            [sys.executable, "-m", "bench.fleet", "--only", kind, "--devices", str(devices),
             "--floor", str(args.floor), "--upgrade-gateways", str(args.upgrade_gateways),
             "--upgrade-children", str(args.upgrade_children),
             "--package-kb", str(args.package_kb)],
            capture_output=True, text=True, timeout=1800, check=False, cwd=REPO,
        )  # fmt: skip
        try:
            results[kind] = json.loads(out.stdout)
        except ValueError:
            results[kind] = {"error": out.stderr[-500:]}
    results["load_average_after"] = os.getloadavg()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--devices", type=int, default=10000, help="fleet size on Mosquitto (0: skip)"
    )
    parser.add_argument("--embedded", type=int, default=1000, help="fleet size on amqtt (0: skip)")
    parser.add_argument(
        "--demo", type=int, default=10000, help="meters in the demo mix on Mosquitto (0: skip)"
    )
    parser.add_argument("--floor", type=Path, default=DEFAULT_FLOOR)
    parser.add_argument(
        "--upgrade-devices", type=int, default=1000, help="direct devices upgraded (0: skip)"
    )
    parser.add_argument(
        "--upgrade-gateways", type=int, default=20, help="gateways whose children are upgraded"
    )
    parser.add_argument("--upgrade-children", type=int, default=50, help="children per gateway")
    parser.add_argument("--package-kb", type=int, default=256, help="size of the package")
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    parser.add_argument(
        "--only",
        choices=["mosquitto", "embedded", "demo", "upgrade-devices", "upgrade-gateways"],
        help=argparse.SUPPRESS,
    )
    arguments = parser.parse_args()
    if arguments.only:
        result = asyncio.run(one(arguments.only, arguments.devices, arguments.floor, arguments))
    else:
        result = main(arguments)
    text = json.dumps(result, indent=1)
    if arguments.out is not None and not arguments.only:
        arguments.out.parent.mkdir(parents=True, exist_ok=True)
        arguments.out.write_text(text + "\n")
    print(text)
    sys.stdout.flush()
    os._exit(0)  # skip tearing down thousands of sockets one by one

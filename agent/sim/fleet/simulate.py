"""A whole simulation: broker, emulator, fleet, faults, the scenario's tasks, and the report.

``run_scenario`` runs everything in one process; ``run_shard`` runs one slice of a fleet
against an emulator elsewhere (several processes or machines behind one broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp

from agent.core.errors import AgentError, ConfigError
from agent.runtime.logging import get_logger
from agent.sim.emulator.api_sim import register_fleet
from agent.sim.emulator.broker_auth import ConnectCheck
from agent.sim.emulator.records import TERMINAL
from agent.sim.emulator.server import build_emulator
from agent.sim.emulator.service import Emulator
from agent.sim.emulator.settings import EmulatorSettings, broker_endpoints
from agent.sim.fleet.broker import BrokerHandle, SetupError, choose_broker, open_broker
from agent.sim.fleet.client import TaskClient
from agent.sim.fleet.faults import FaultLog, run_faults
from agent.sim.fleet.layout import Slot, build_layout, registration, seen_online, shard
from agent.sim.fleet.options import RunOptions
from agent.sim.fleet.progress import LiveBars
from agent.sim.fleet.proxy import FlakyProxy
from agent.sim.fleet.report import ProgressSamples, TaskRecord, build_report, write_report
from agent.sim.fleet.runner import FleetRunner
from agent.sim.fleet.spec import Scenario, TaskSpec
from agent.sim.fleet.verdict import judge

T = TypeVar("T")

API_NAMES = {
    "huawei-iotda": "huawei-iotda",
    "tencent-iothub": "tencent-iothub",
    "tencent-iothub-v2": "tencent-iothub",
    "oceanconnect": "oceanconnect",
    "tencent-wedata": "tencent-wedata",
}


def task_type_of(task: TaskSpec) -> str:
    """The task type a scenario task asks for, in its API's terms."""
    if task.api == "huawei-iotda":
        return str(task.body.get("task_type", ""))
    if task.api == "tencent-iothub":
        return str(task.body.get("TaskType", ""))
    if task.api == "tencent-iothub-v2":
        return str(task.form.get("taskType", ""))
    if task.api == "oceanconnect":
        return str(task.body.get("taskType", ""))
    return str(task.body.get("TaskType", ""))


async def _step(what: str, job: Awaitable[T]) -> T:
    """One set-up step; what goes wrong becomes a :class:`SetupError` saying which step."""
    try:
        return await job
    except (ConfigError, SetupError):
        raise
    except (AgentError, OSError, TimeoutError, aiohttp.ClientError) as exc:
        detail = str(exc).strip()
        raise SetupError(f"{what}: {detail}" if detail else what) from exc


def _connect_timeout(agents: int) -> float:
    return max(60.0, agents * 0.02)


async def _until_seen_online(emulator: Emulator, runner: FleetRunner, log: Any) -> None:
    """Wait (bounded) until the emulator sees the fleet online (the broker's and gateways' word)."""
    if emulator.presence.mode != "broker":
        return  # lenient: everyone is online; uplink presence comes with the first uplink
    devices = seen_online(runner.slots)
    missing = await emulator.wait_online(devices, _connect_timeout(len(devices)))
    if missing:
        log.warning("fleet.not_online", devices=len(missing), first=missing[:5])


async def _connect(runner: FleetRunner) -> None:
    """Wait until every agent is connected, or fail saying how many were."""
    timeout = _connect_timeout(len(runner.slots))
    try:
        await runner.wait_connected(timeout)
    except TimeoutError as exc:
        msg = f"{runner.connected} of {len(runner.slots)} agents connected within {timeout:g} s"
        raise SetupError(msg) from exc


async def run_scenario(  # noqa: PLR0915 - the steps of one run, in order, and its teardown
    scenario: Scenario, options: RunOptions
) -> dict[str, Any]:
    """Run a scenario in this process; returns the report (also written to disk).

    Raises:
        SetupError: the broker, the emulator or the fleet could not be started or connected, or
            the embedded broker was asked to hold more agents than it can.
    """
    log = get_logger(component="simulate")
    workdir = options.workdir
    slots = build_layout(scenario.fleet)
    if options.shard is not None:
        slots = shard(slots, *options.shard)
    choice = choose_broker(options.broker or scenario.broker, sum(s.simulated for s in slots))
    # Only a scenario that restarts the broker needs its queue to survive a SIGKILL.
    durable = scenario.fleet.faults.broker_restarts > 0
    broker = await _step(
        f"starting the {choice} broker", open_broker(choice, workdir, durable=durable)
    )
    emulator = build_emulator(
        EmulatorSettings(
            data_dir=workdir / "emulator",
            broker_url=broker.url,
            minute_s=scenario.minute_s,
            command_timeout_s=scenario.command_timeout_s,
            version_timeout_s=scenario.version_timeout_s,
            upgrade_timeout_s=scenario.upgrade_timeout_s,
            online_timeout_s=scenario.online_timeout_s,
            lenient=scenario.lenient,
            children_follow_gateway=scenario.children_follow_gateway,
            strict_faq=scenario.strict_faq,
            # Brokers the simulator starts announce connections; another may not (weaker).
            presence="broker" if broker.kind in ("embedded", "mosquitto") else "uplink",
        )
    )
    # Device passwords are checked where the broker lets the emulator see them.
    passwords_checked = broker.check_connects(ConnectCheck(emulator.registry, emulator.clock))
    proxy: FlakyProxy | None = None
    runner: FleetRunner | None = None
    client: TaskClient | None = None
    try:
        await _step("starting the emulator", emulator.start())
        if options.announce is not None:
            options.announce(emulator.url)
        await _step(
            f"the emulator did not connect to the broker at {broker.url} within 30 s",
            emulator.wait_connected(30),
        )
        await _step(
            "registering the fleet", register_fleet(emulator, registration(slots, scenario.fleet))
        )
        host, port = broker.host, broker.port
        if scenario.fleet.faults.network_flaps:
            proxy = FlakyProxy(host, port)
            await _step("starting the flaky network proxy", proxy.start())
            host, port = "127.0.0.1", proxy.port
        runner = FleetRunner(scenario.fleet, slots, host=host, port=port, workdir=workdir)
        connect_started = time.monotonic()
        await _step("starting the fleet", runner.start())
        await _connect(runner)
        await _until_seen_online(emulator, runner, log)
        connect_s = time.monotonic() - connect_started
        log.info("fleet.connected", agents=len(runner.slots), seconds=round(connect_s, 2))
        client = TaskClient(emulator.url)
        scenario = await _upload_packages(scenario, emulator)
        records, samples, faults, duration = await _drive(
            scenario=scenario,
            emulator=emulator,
            client=client,
            runner=runner,
            broker=broker,
            proxy=proxy,
            options=options,
            log=log,
        )
        fleet = {
            "agents": len(runner.slots),
            "devices": sum(1 + len(s.children) for s in slots),
            "not_simulated": sum(1 + len(s.children) for s in runner.skipped),
            "broker": broker.kind,
            "passwords": "checked" if passwords_checked else "not checked",
            "connect_s": round(connect_s, 2),
            "agent_restarts": runner.restarts,
        }
        executions = {
            "total": runner.executions.total,
            "by_kind": dict(runner.executions.by_kind),
            "repeated": runner.executions.repeated(),
        }
        downloads = package_downloads(emulator)
        await client.close()
        client = None
        await runner.stop()
        runner = None
        report = build_report(
            scenario=scenario.name,
            records=records,
            samples=samples,
            duration_s=duration,
            fleet=fleet,
            faults={
                k: getattr(faults, k) for k in ("agent_kills", "broker_restarts", "network_flaps")
            }
            | {"events": faults.events},
            executions=executions,
            downloads=downloads,
        )
        report["verdict"] = judge(scenario.tasks, report["tasks"], scenario.timeout_s)
        report_dir = options.report_dir or workdir / "report"
        json_path, png_path = write_report(report, report_dir, records)
        report["files"] = {"json": str(json_path), "png": str(png_path)}
        if options.hold is not None:
            await options.hold(report)
    finally:
        if client is not None:
            await client.close()
        if runner is not None:
            await runner.stop()
        await emulator.close()
        if proxy is not None:
            await proxy.close()
        await broker.close()
    return report


def package_downloads(emulator: Emulator) -> list[dict[str, Any]]:
    """Per package: requests served, how many connections made them, bytes sent."""
    totals: dict[str, dict[str, Any]] = {}
    for entry in emulator.downloads.summary():
        package = emulator.registry.packages.get(entry["package_id"])
        total = totals.setdefault(
            entry["package_id"],
            {
                "package": package.name if package else entry["package_id"],
                "version": package.version if package else None,
                "requests": 0,
                "connections": set(),
                "bytes": 0,
            },
        )
        total["requests"] += entry["requests"]
        total["connections"].add(entry["connection"])
        total["bytes"] += entry["bytes"]
    return [{**t, "connections": len(t["connections"])} for t in totals.values()]


async def _upload_packages(scenario: Scenario, emulator: Emulator) -> Scenario:
    """Upload the scenario's packages; tasks naming ``${package:NAME}`` get their ids."""
    ids: dict[str, str] = {}
    for spec in scenario.packages:
        data = hashlib.sha256(spec.name.encode()).digest() * (spec.size_kb * 32)
        package = await emulator.registry.add_package(
            data,
            name=spec.name,
            version=spec.version,
            package_type=spec.package_type,
            location=spec.location,
        )
        ids[f"${{package:{spec.name}}}"] = package.package_id

    def substitute(value: Any) -> Any:
        if isinstance(value, str):
            return ids.get(value, value)
        if isinstance(value, dict):
            return {k: substitute(v) for k, v in value.items()}
        if isinstance(value, list):
            return [substitute(v) for v in value]
        return value

    tasks = [t.model_copy(update={"body": substitute(t.body)}) for t in scenario.tasks]
    return scenario.model_copy(update={"tasks": tasks})


async def _drive(
    *,
    scenario: Scenario,
    emulator: Emulator,
    client: TaskClient,
    runner: FleetRunner,
    broker: BrokerHandle,
    proxy: FlakyProxy | None,
    options: RunOptions,
    log: Any,
) -> tuple[list[TaskRecord], ProgressSamples, FaultLog, float]:
    """Submit the tasks, inject the faults, sample progress until every task has ended."""
    started = time.monotonic()
    records = [
        TaskRecord(name=t.name, api=t.api, task_type=task_type_of(t)) for t in scenario.tasks
    ]
    samples = ProgressSamples()
    engine = emulator.engine

    async def submit(spec: TaskSpec, record: TaskRecord) -> None:
        await asyncio.sleep(spec.at_s)
        if spec.skip_if_unavailable and not emulator.table.available(
            API_NAMES[spec.api], record.task_type
        ):
            record.skipped = "not carried out by the emulator in this build"
            return
        record.submitted_at = time.time()
        answer = await client.submit(spec)
        record.task_id, record.submit_error = answer.task_id, answer.error
        if answer.error:
            log.warning("simulate.task.refused", task=spec.name, error=answer.error)

    submissions = [
        asyncio.ensure_future(submit(spec, record))
        for spec, record in zip(scenario.tasks, records, strict=True)
    ]
    fault_job = asyncio.ensure_future(
        run_faults(
            scenario.fleet.faults,
            runner=runner,
            broker=broker,
            proxy=proxy,
            clock=time.monotonic,
            log=log,
        )
    )
    deadline = started + scenario.timeout_s

    def sample() -> bool:
        progress = {}
        done = True
        for record in records:
            task = engine.tasks.get(record.task_id or "")
            if task is None:
                done = done and (record.skipped is not None or record.submit_error is not None)
                continue
            progress[record.name] = (task.terminal, task.counts["success"], task.total)
            bars.update(record.name, status=engine.status(task), progress=task.progress())
            done = done and task.finished_at is not None
        samples.add(time.monotonic() - started, progress)
        return done and all(s.done() for s in submissions)

    with LiveBars(enabled=options.progress) as bars:
        while not sample():
            if time.monotonic() > deadline:
                log.warning("simulate.timeout", timeout_s=scenario.timeout_s)
                break
            await asyncio.sleep(0.25)
        faults = await fault_job
        sample()
    for job in submissions:
        job.cancel()
    duration = time.monotonic() - started
    for record in records:
        task = engine.tasks.get(record.task_id or "")
        if task is None:
            continue
        record.status = engine.status(task)
        record.task_progress = task.progress()
        record.finished_at = task.finished_at
        for sub in engine.subtasks[task.task_id]:
            record.attempts += sub.attempts
            if sub.state in TERMINAL and sub.dispatched_at and sub.finished_at:
                record.latencies_s.append(sub.finished_at - sub.dispatched_at)
            if sub.state not in ("success",) and sub.error_code:
                key = f"{sub.error_code}: {sub.error_msg}"[:160]
                record.errors[key] = record.errors.get(key, 0) + 1
    return records, samples, faults, duration


async def run_shard(
    scenario: Scenario, options: RunOptions, *, emulator_url: str, broker_url: str
) -> int:
    """Run one shard's agents against a broker and an emulator elsewhere, until SIGTERM/SIGINT.

    ``broker_url`` may list the endpoints of a clustered broker, ``mqtt://a:1883,mqtt://b:1883``:
    agents connect to the first and move on to the next when one fails.
    """
    log = get_logger(component="shard")
    index, count = options.shard or (0, 1)
    slots: list[Slot] = shard(build_layout(scenario.fleet), index, count)
    host, port, hosts = broker_endpoints(broker_url)
    client = TaskClient(emulator_url)
    runner = FleetRunner(
        scenario.fleet, slots, host=host, port=port, hosts=hosts, workdir=options.workdir
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await client.register_fleet(registration(slots, scenario.fleet))
        await runner.start()
        # Shards run against clustered brokers, where every subscription of every agent is set
        # up as a replicated consumer (NATS JetStream): allow far more than one machine needs.
        await runner.wait_connected(max(_connect_timeout(len(runner.slots)), len(runner.slots)))
        print(json.dumps({"event": "shard.ready", "shard": f"{index}/{count}",
                          "agents": len(runner.slots)}), flush=True)  # fmt: skip
        log.info("shard.ready", agents=len(runner.slots))
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await client.close()
        await runner.stop()
    print(json.dumps({"event": "shard.stopped", "executions": runner.executions.total,
                      "by_kind": dict(runner.executions.by_kind),
                      "repeated": len(runner.executions.repeated())}), flush=True)  # fmt: skip
    return 0

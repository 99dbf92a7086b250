"""Fleet bench across a NATS cluster: shard processes on nodes 2..n, the task service on node 1.

A 3-node NATS cluster (nats-server 2.9+, MQTT on every node, JetStream stores in a temporary
directory) on loopback ports; the emulator in this process, connected through node 1; the
fleet split into ``--shards`` processes (``device-agent simulate --shard i/n``), shard i
connected to node 2 + i % (nodes - 1) first, with every node as a fallback (``mqtt.hosts``).
One createCommands task over every device (a handler without latency), timed to 100 %
Success. Reports the time to connect, the time to 100 %, each shard's memory (RSS once
connected and at the end) and the ratio to the floor: ../shared/tools/fleet_floor.py (bare
aiomqtt clients, one QoS 1 request/reply each) against node 2 of a cluster of the same
configuration in the same run, started afresh for it and stopped before the fleet's.

While the shards connect, every node's ``/jsz`` is read every few seconds: the JetStream
consumers (one per QoS 1 subscription of every persistent session) and API errors over time,
which is what limits how fast a fleet can join a cluster.

Usage: python -m bench.fleet_cluster [--devices 20000] [--shards 4] [--consumer-replicas 1]
       [--stream-replicas 3]
Prints one JSON object. Measured on a shared 2-core machine: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from agent.runtime.logging import configure_logging
from agent.sim.emulator.records import Task
from agent.sim.emulator.server import build_emulator
from agent.sim.emulator.service import Emulator
from agent.sim.emulator.settings import EmulatorSettings
from agent.sim.nats import NatsCluster
from bench.fleet import DEFAULT_FLOOR, raise_fd_limit, run_floor

REPO = Path(__file__).resolve().parents[1]


def default_floor() -> Path:
    """``shared/tools/fleet_floor.py`` beside the checkout (a worktree sits one level deeper)."""
    found = (parent / "shared" / "tools" / "fleet_floor.py" for parent in REPO.parents)
    return next((path for path in found if path.exists()), DEFAULT_FLOOR)


def scenario_text(devices: int, connect_concurrency: int, subscribe_concurrency: int) -> str:
    """The shards' scenario: one cohort, a PING handler without latency, SQLite journals."""
    return f"""
[fleet]
connect_concurrency = {connect_concurrency}
subscribe_concurrency = {subscribe_concurrency}
[[fleet.cohorts]]
name = "bench"
count = {devices}
[[fleet.handlers]]
command_name = "PING"
"""


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A process's resident set size (or peak, ``VmHWM``) in KiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def jsz(port: int) -> dict[str, Any]:
    """A node's JetStream counters (``/jsz`` on its loopback monitoring port); {} if it is down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/jsz", timeout=5) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return {}
    api = body.get("api") or {}
    return {
        "consumers": body.get("consumers", 0),
        "streams": body.get("streams", 0),
        "api_total": api.get("total", 0),
        "api_errors": api.get("errors", 0),
    }


async def sample_jetstream(
    cluster: NatsCluster, samples: list[dict[str, Any]], every_s: float = 5.0
) -> None:
    """Append every node's counters to ``samples`` every ``every_s`` until cancelled."""
    started = time.perf_counter()
    while True:
        nodes = [await asyncio.to_thread(jsz, node.http_port) for node in cluster.nodes]
        samples.append(
            {
                "t_s": round(time.perf_counter() - started, 1),
                "consumers": [n.get("consumers") for n in nodes],
                "api_errors": [n.get("api_errors") for n in nodes],
            }
        )
        await asyncio.sleep(every_s)


def read_event(stream: IO[str], event: str, deadline: float) -> dict[str, Any]:
    """Read JSON lines until one has ``event``; raises TimeoutError after ``deadline``."""
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
    msg = f"no {event} line"
    raise TimeoutError(msg)


def start_shards(
    cluster: NatsCluster, url: str, scenario: Path, workdir: Path, count: int
) -> list[subprocess.Popen[str]]:
    """``count`` shard processes; shard i connects to node 2 + i % (nodes - 1) first."""
    processes = []
    for index in range(count):
        first = 1 + index % (len(cluster.nodes) - 1)
        with (workdir / f"shard-{index}.log").open("w") as log:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "agent",
                        "simulate",
                        "--scenario",
                        str(scenario),
                        "--emulator",
                        url,
                        "--broker",
                        cluster.urls(first=first),
                        "--shard",
                        f"{index}/{count}",
                        "--workdir",
                        str(workdir / f"shard-{index}"),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=log,
                    cwd=REPO,
                    text=True,
                )
            )
    return processes


async def ping_everyone(emulator: Emulator, devices: int, deadline_s: float) -> dict[str, Any]:
    """One createCommands task over every device, timed until every subtask has ended."""
    ids = [f"bench-{i:05d}" for i in range(devices)]
    now = time.time()
    task = Task(
        task_id=emulator.new_id(),
        api="huawei-iotda",
        task_type="createCommands",
        name="bench_ping",
        account="bench",
        created_at=now,
        schedule_at=now,
        request={"document": {"command_name": "PING"}},
    )
    ended = asyncio.Event()

    def watch(seen: Task, _: object) -> None:
        if seen is task and seen.terminal == seen.total:
            ended.set()

    emulator.engine.observers.append(watch)
    t0 = time.perf_counter()
    await emulator.engine.create(task, ids)
    with contextlib.suppress(TimeoutError):  # reported as it stands: status, counts, errors
        await asyncio.wait_for(ended.wait(), deadline_s)
    elapsed = time.perf_counter() - t0
    return {
        "seconds_to_100": round(elapsed, 2) if ended.is_set() else None,
        "seconds_waited": round(elapsed, 2),
        "progress": task.progress(),
        "status": task.status(time.time()),
        "success": task.counts["success"],
        "fail": task.counts["fail"],
        "subtasks_per_s": round(devices / elapsed),
        "errors": sorted(
            {s.error_msg or "" for s in emulator.engine.subtasks[task.task_id] if s.error_msg}
        )[:5],
    }


async def stop_shards(shards: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """SIGTERM every shard; their ``shard.stopped`` lines."""
    for process in shards:
        process.send_signal(15)
    stopped = []
    for process in shards:
        assert process.stdout is not None
        stopped.append(
            await asyncio.to_thread(
                read_event, process.stdout, "shard.stopped", time.monotonic() + 120
            )
        )
    return stopped


async def wait_ready(
    cluster: NatsCluster, shards: list[subprocess.Popen[str]], deadline: float
) -> dict[str, Any]:
    """Wait for every shard's ``shard.ready``, sampling the cluster's JetStream meanwhile."""
    started = time.perf_counter()
    samples: list[dict[str, Any]] = []
    sampler = asyncio.create_task(sample_jetstream(cluster, samples))
    result: dict[str, Any] = {}
    ready = 0
    try:
        for process in shards:
            assert process.stdout is not None
            # A silent shard blocks the read: the wait, not the read, keeps the deadline.
            await asyncio.wait_for(
                asyncio.to_thread(read_event, process.stdout, "shard.ready", deadline),
                max(1.0, deadline - time.monotonic()),
            )
            ready += 1
    except TimeoutError:
        result["connect_error"] = f"{ready} of {len(shards)} shards ready by the deadline"
    finally:
        sampler.cancel()
        result["jetstream_while_connecting"] = samples[:: max(1, len(samples) // 12)] + samples[-1:]
    result["connect_s"] = round(time.perf_counter() - started, 1)
    consumers = sum(c or 0 for c in samples[-1]["consumers"]) if samples else 0
    result["consumers_per_s"] = round(consumers / max(result["connect_s"], 0.1), 1)
    return result


async def run_floor_on_cluster(args: argparse.Namespace, workdir: Path, clients: int) -> Any:
    """The floor against node 2 of a cluster of its own, stopped afterwards."""
    cluster = cluster_for(args, workdir)
    await asyncio.to_thread(cluster.start)
    try:
        return await asyncio.to_thread(
            run_floor, args.floor, clients, cluster.nodes[1].mqtt_port
        ) or {"error": f"no floor: {args.floor} not found"}
    finally:
        await asyncio.to_thread(cluster.stop)


def cluster_for(args: argparse.Namespace, workdir: Path) -> NatsCluster:
    """A 3-node cluster with the bench's MQTT settings."""
    return NatsCluster(
        workdir,
        # None: as many as nodes (up to 3), sessions survive a node; 1: each session and its
        # messages on one node, no replication round trips (a lost node loses its sessions).
        stream_replicas=args.stream_replicas,
        consumer_replicas=args.consumer_replicas,
        consumer_memory_storage=True,
        max_ack_pending=args.max_ack_pending,
    )


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Cluster, floor, emulator, shards, one task; the measurements."""
    # The floor runs on a cluster of its own (same configuration, stopped before the fleet's
    # starts): NATS keeps its clean sessions' consumers after they disconnect, and the fleet
    # would otherwise share the cluster with 2 x N consumers nobody uses.
    floor_clients = min(args.floor_clients or args.devices, raise_fd_limit() - 1000)
    floor = await run_floor_on_cluster(args, workdir / "nats-floor", floor_clients)
    cluster = cluster_for(args, workdir / "nats")
    await asyncio.to_thread(cluster.start)
    result: dict[str, Any] = {
        "devices": args.devices,
        "shards": args.shards,
        "nodes": len(cluster.nodes),
        "nats": {
            "stream_replicas": args.stream_replicas or "cluster size (3)",
            "consumer_replicas": args.consumer_replicas or "stream replicas (3)",
            "consumer_memory_storage": True,
            "max_ack_pending": args.max_ack_pending,
        },
        "cpus": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
    }
    shards: list[subprocess.Popen[str]] = []
    emulator: Emulator | None = None
    try:
        result["floor"] = floor
        result["floor_clients"] = floor_clients
        emulator = build_emulator(
            EmulatorSettings(
                data_dir=workdir / "emulator",
                broker_url=cluster.urls(first=0),
                presence="uplink",  # NATS publishes no MQTT connect notices
                max_in_flight=5000,
                command_timeout_s=600,
                max_targets=max(30000, args.devices),
            )
        )
        await emulator.start()
        await emulator.wait_connected(60)
        scenario = workdir / "fleet.toml"
        # Per shard: the cluster sets up at most shards x this many SUBSCRIBEs at once.
        scenario.write_text(
            scenario_text(args.devices, args.connect_concurrency, args.subscribe_concurrency)
        )
        shards = start_shards(cluster, emulator.url, scenario, workdir, args.shards)
        connect_s = args.connect_deadline_s or max(300.0, args.devices * 0.5)
        result.update(await wait_ready(cluster, shards, time.monotonic() + connect_s))
        if "connect_error" in result:
            result["shard_rss_mb"] = [round(rss_kb(p.pid) / 1024, 1) for p in shards]
            result["nats_rss_mb"] = [
                round(rss_kb(cluster.pid(i) or 0) / 1024, 1) for i in range(len(cluster.nodes))
            ]
            return result
        result["shard_rss_mb_connected"] = [round(rss_kb(p.pid) / 1024, 1) for p in shards]
        result["createCommands"] = await ping_everyone(
            emulator, args.devices, args.task_deadline_s or max(600.0, args.devices * 0.1)
        )
        result["shard_rss_mb_peak"] = [round(rss_kb(p.pid, "VmHWM") / 1024, 1) for p in shards]
        result["nats_rss_mb"] = [
            round(rss_kb(cluster.pid(i) or 0) / 1024, 1) for i in range(len(cluster.nodes))
        ]
        result["kb_per_device"] = round(
            sum(rss_kb(p.pid) for p in shards) / max(args.devices, 1), 1
        )
        stopped = await stop_shards(shards)
        result["executions"] = sum(line["executions"] for line in stopped)
        result["repeated_executions"] = sum(line["repeated"] for line in stopped)
    finally:
        for process in shards:
            if process.poll() is None:
                process.kill()
            process.wait(30)
            if process.stdout is not None:
                process.stdout.close()
        if emulator is not None:
            await emulator.close()
        await asyncio.to_thread(cluster.stop)
    floor = result.get("floor") or {}
    if floor.get("fanout_reply_s") and result.get("createCommands", {}).get("seconds_to_100"):
        # The floor may have run fewer clients (open-file limit): compare per-device times.
        per_device = result["createCommands"]["seconds_to_100"] / args.devices
        floor_per_client = max(floor["fanout_reply_s"], 0.1) / floor["clients"]
        result["time_vs_floor"] = round(per_device / floor_per_client, 2)
    if floor.get("kb_per_client") and result.get("kb_per_device"):
        result["memory_vs_floor"] = round(result["kb_per_device"] / floor["kb_per_client"], 2)
    if floor.get("connect_s") and result.get("connect_s"):
        result["connect_vs_floor"] = round(
            (result["connect_s"] / args.devices) / (floor["connect_s"] / floor["clients"]), 2
        )
    return result


def main() -> None:
    """Parse the options, run once, print the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--floor", type=Path, default=default_floor())
    parser.add_argument(
        "--floor-clients",
        type=int,
        default=0,
        help="clients in the floor (0: as many as devices); ratios are per client",
    )
    parser.add_argument(
        "--consumer-replicas",
        type=int,
        default=1,
        help="JetStream replicas of each MQTT subscription's consumer (0: as the streams)",
    )
    # Per subscription; NATS refuses (SUBACK 0x80) a subscription that takes a session's total
    # over 65535, and the task service's link has over a dozen filters.
    parser.add_argument(
        "--stream-replicas",
        type=int,
        default=0,
        help="replicas of the MQTT streams (sessions, messages); 0: as many as nodes",
    )
    parser.add_argument("--max-ack-pending", type=int, default=1024)
    parser.add_argument("--connect-concurrency", type=int, default=64)
    parser.add_argument(
        "--subscribe-concurrency",
        type=int,
        default=16,
        help="SUBSCRIBE exchanges in flight per shard (each filter: a JetStream consumer)",
    )
    parser.add_argument(
        "--connect-deadline-s",
        type=float,
        default=0,
        help="give up (reporting how far the shards got) after this long; 0: devices x 0.5 s",
    )
    parser.add_argument(
        "--task-deadline-s",
        type=float,
        default=0,
        help="report the task as it stands after this long; 0: max(600, devices x 0.1) s",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep logs and stores here (default: a temp dir)"
    )
    args = parser.parse_args()
    args.consumer_replicas = args.consumer_replicas or None
    args.stream_replicas = args.stream_replicas or None
    configure_logging("error", "console", stream=sys.stderr)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run(args, args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="fleet-cluster-bench-") as tmp:
            result = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(result, indent=1))
    sys.stdout.flush()
    os._exit(0)  # skip tearing down thousands of sockets one by one


if __name__ == "__main__":
    main()

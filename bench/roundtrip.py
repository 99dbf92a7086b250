"""Command round trips through the agent (journal on) vs a bare paho echo: same broker, same run.

The baseline is ../shared/tools/paho_echo_baseline.py: a paho "device" that answers each request
with a JSON load and dump, nothing durable. The agent side is the real daemon (a separate
process, as in production) with an in-process ``simulated`` handler, so what is measured is the
agent's own cost: decode, journal (WAL, synchronous=FULL: two fsyncs per command), ordered
PUBACK, execute, journal the result, publish, forget after PUBACK. The service side of the
agent measurement is the baseline's own service loop, unchanged but for the topics.

Usage: python bench/roundtrip.py [--baseline PATH] [--requests N] [--window W] [--serial N]
       [--rounds R] [--growth N] [--growth-rounds G] [--out bench/results/roundtrip.json]
Prints one JSON object (every figure of the README's table; see bench/report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.sim.mosquitto import Mosquitto  # noqa: E402
from tests.support.agents import AgentProcess, agent_config  # noqa: E402

DEVICE = "bench-device"
# ../shared/tools beside the checkout (a worktree may sit a level deeper).
DEFAULT_BASELINE = next(
    (
        found
        for parent in REPO.parents
        if (found := parent / "shared" / "tools" / "paho_echo_baseline.py").exists()
    ),
    REPO.parent / "shared" / "tools" / "paho_echo_baseline.py",
)


def run_baseline(script: Path, port: int, n: int, window: int) -> dict[str, Any]:
    """Run the bare paho echo baseline against the broker; returns its JSON line.

    Its CPU per command is the whole process's (both the device and the service end, and the
    interpreter's start), so it overstates what the device end alone costs.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, str(script), "127.0.0.1", str(port), str(n), str(window)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    result["cpu_us_per_command"] = round(cpu * 1e6 / n)
    return result


def drive_agent(port: int, n: int, window: int, tag: str) -> dict[str, Any]:
    """The baseline's service loop, aimed at the agent's Huawei IoTDA command topics."""
    prefix = f"$oc/devices/{DEVICE}/sys/commands/"
    svc = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-svc-{tag}")
    svc.max_inflight_messages_set(window)
    latencies: list[float] = []
    sent_at: dict[str, float] = {}
    done = threading.Event()
    slots = threading.Semaphore(window)

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        rid = msg.topic.rsplit("request_id=", 1)[1]
        json.loads(msg.payload)
        started = sent_at.pop(rid, None)
        if started is None:  # a duplicate answer (harmless by contract); not a round trip
            return
        latencies.append(time.perf_counter() - started)
        slots.release()
        if len(latencies) == n:
            done.set()

    svc.on_message = on_message
    svc.connect("127.0.0.1", port)
    sock = svc.socket()
    assert isinstance(sock, socket.socket)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    svc.subscribe(prefix + "response/+", 1)
    svc.loop_start()
    time.sleep(0.5)
    started = time.perf_counter()
    for i in range(n):
        slots.acquire()
        rid = f"{tag}-{i}"
        sent_at[rid] = time.perf_counter()
        body = {"service_id": "Switch", "command_name": "ON_OFF", "paras": {"value": "ON"}}
        svc.publish(f"{prefix}request_id={rid}", json.dumps(body), qos=1)
    done.wait(300)
    elapsed = time.perf_counter() - started
    svc.loop_stop()
    svc.disconnect()
    latencies.sort()
    return {
        "n": len(latencies),
        "rps": round(len(latencies) / elapsed),
        "p50_ms": round(latencies[len(latencies) // 2] * 1e3, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1e3, 2),
    }


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# Installed, the daemon runs from compiled bytecode (pip compiles it, so does scripts/build-deb).
# A checkout run with PYTHONDONTWRITEBYTECODE would compile every module at each start, which
# is a cost of the checkout, not of the daemon: the bench's daemons keep bytecode here instead.
BYTECODE_ENV: dict[str, str] = {}


def prepare_bytecode(directory: Path) -> None:
    """Compile what the daemon imports into ``directory`` (its daemons then read it from there)."""
    BYTECODE_ENV.update(PYTHONPYCACHEPREFIX=str(directory), PYTHONDONTWRITEBYTECODE="")
    modules = "agent.cli, agent.app.daemon, agent.app.build, agent.profiles.huawei_iotda"
    subprocess.run(
        [sys.executable, "-c", f"import {modules}"],
        env={**os.environ, **BYTECODE_ENV, "PYTHONPATH": str(REPO)},
        check=True,
        timeout=120,
    )


def start_agent(workdir: Path, port: int, synchronous: str) -> AgentProcess:
    """The daemon with a zero-latency simulated handler for ON_OFF."""
    routes = [
        {
            "service_id": "Switch",
            "command_name": "ON_OFF",
            "handler": {"kind": "simulated", "result_paras": {"state": "ON"}},
        }
    ]
    config = agent_config(
        workdir,
        port,
        device_id=DEVICE,
        routes=routes,
        journal={"synchronous": synchronous},
        logging={"level": "warning"},
        limits={"max_concurrent_subtasks": 128},
        # Idle memory is measured with every feature a device would enable switched on.
        desired={"state_file": str(workdir / "desired.json")},
        upgrades={
            "enabled": True,
            "state_dir": str(workdir / "upgrades"),
            "installer": "simulated",
            "simulated": {"rehearsal_only": True},
        },
    )
    agent = AgentProcess(config, workdir, env=BYTECODE_ENV)
    agent.start()
    return agent


def cpu_s(pid: int) -> float:
    """User plus system CPU time a process has used, in seconds (load-independent)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def first_answer(port: int, start: Any) -> tuple[AgentProcess, dict[str, Any]]:
    """Start the daemon with a service already connected; time READY and the first answer."""
    prefix = f"$oc/devices/{DEVICE}/sys/commands/"
    answered = threading.Event()
    svc = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-svc-first")
    svc.on_message = lambda client, userdata, msg: answered.set()
    svc.connect("127.0.0.1", port)
    subscribed = threading.Event()
    svc.on_subscribe = lambda *args: subscribed.set()
    svc.subscribe(prefix + "response/+", 1)
    svc.loop_start()
    try:
        subscribed.wait(10)
        started = time.perf_counter()
        agent = start()
        ready = time.perf_counter()
        body = {"service_id": "Switch", "command_name": "ON_OFF", "paras": {"value": "ON"}}
        svc.publish(f"{prefix}request_id=first", json.dumps(body), qos=1)
        answered.wait(30)
        done = time.perf_counter()
    finally:
        svc.loop_stop()
        svc.disconnect()
    cpu = cpu_s(agent.process.pid) if agent.process else float("nan")
    return agent, {
        "start_to_ready_s": round(ready - started, 3),
        "start_to_first_answer_s": round(done - started, 3) if answered.is_set() else None,
        "start_cpu_s": round(cpu, 3),
    }


def measure_agent(
    tmp: Path, port: int, synchronous: str, args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    """One round against a freshly started daemon: start-up, idle RSS, windowed, serial, growth."""
    workdir = tmp / f"agent-{synchronous}-{tag}"
    workdir.mkdir()
    agent, start = first_answer(port, lambda: start_agent(workdir, port, synchronous))
    pid = agent.process.pid if agent.process else 0
    try:
        time.sleep(2.0)
        idle = rss_mb(pid)
        cpu_before = cpu_s(pid)
        windowed = drive_agent(port, args.requests, args.window, f"w{tag}")
        windowed["cpu_us_per_command"] = round((cpu_s(pid) - cpu_before) * 1e6 / args.requests)
        serial = drive_agent(port, args.serial, 1, f"s{tag}")
        loaded = rss_mb(pid)
        growth = None
        if args.growth and int(tag) < args.growth_rounds:
            drive_agent(port, args.growth, args.window, f"g{tag}")
            growth = round(rss_mb(pid) - loaded, 2)
    finally:
        agent.stop()
    return {
        **start,
        "windowed": windowed,
        "serial": serial,
        "idle_rss_mb": round(idle, 1),
        "rss_after_load_mb": round(loaded, 1),
        "rss_growth_mb": growth,
        "growth_commands": args.growth if growth is not None else None,
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    """Run the bench and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--serial", type=int, default=2000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds; medians reported"
    )
    parser.add_argument(
        "--growth", type=int, default=100_000, help="commands after which RSS growth is read"
    )
    parser.add_argument(
        "--growth-rounds",
        type=int,
        default=1,
        help="rounds (the first ones) that also read RSS growth; 100,000 commands take a while",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    args = parser.parse_args()
    if not args.baseline.exists():
        parser.error(f"baseline script not found: {args.baseline}")

    rounds: dict[str, list[dict[str, Any]]] = {"baseline": [], "full": [], "normal": []}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-roundtrip-") as tmp:
        prepare_bytecode(Path(tmp) / "bytecode")
        broker = Mosquitto(Path(tmp) / "mosquitto", save_every_change=False)
        broker.start()
        try:
            # Baseline and agent alternate, so a busy moment on the machine hits both alike.
            for index in range(args.rounds):
                rounds["baseline"].append(
                    {
                        "windowed": run_baseline(
                            args.baseline, broker.port, args.requests, args.window
                        ),
                        "serial": run_baseline(args.baseline, broker.port, args.serial, 1),
                    }
                )
                for synchronous in ("full", "normal"):
                    rounds[synchronous].append(
                        measure_agent(Path(tmp), broker.port, synchronous, args, str(index))
                    )
        finally:
            broker.stop()

    def median_of(name: str, mode: str, field: str) -> float:
        return _median([float(r[mode][field]) for r in rounds[name]])

    report: dict[str, Any] = {
        "rounds": args.rounds,
        "requests": args.requests,
        "serial": args.serial,
        "load_average_before": load_before,
    }
    base_rps = median_of("baseline", "windowed", "rps")
    base_p50 = median_of("baseline", "serial", "p50_ms")
    report["baseline"] = {
        "windowed_rps": base_rps,
        "serial_p50_ms": base_p50,
        "serial_p99_ms": median_of("baseline", "serial", "p99_ms"),
        "cpu_us_per_command": median_of("baseline", "windowed", "cpu_us_per_command"),
    }
    for synchronous in ("full", "normal"):
        rps = median_of(synchronous, "windowed", "rps")
        p50 = median_of(synchronous, "serial", "p50_ms")
        p99 = median_of(synchronous, "serial", "p99_ms")
        runs = rounds[synchronous]
        growths = [r["rss_growth_mb"] for r in runs if r["rss_growth_mb"] is not None]
        firsts = [r["start_to_first_answer_s"] for r in runs if r["start_to_first_answer_s"]]
        report[f"agent_journal_{synchronous}"] = {
            "windowed_rps": rps,
            "serial_p50_ms": p50,
            "serial_p99_ms": p99,
            "throughput_ratio": round(rps / base_rps, 2),
            "serial_p50_ratio": round(p50 / base_p50, 2),
            "serial_p99_ratio": round(p99 / report["baseline"]["serial_p99_ms"], 2),
            "cpu_us_per_command": median_of(synchronous, "windowed", "cpu_us_per_command"),
            "idle_rss_mb": _median([r["idle_rss_mb"] for r in runs]),
            "rss_after_load_mb": _median([r["rss_after_load_mb"] for r in runs]),
            "rss_growth_mb": _median(growths) if growths else None,
            "growth_commands": args.growth if growths else None,
            "growth_rounds": len(growths),
            "start_to_ready_s": _median([r["start_to_ready_s"] for r in runs]),
            "start_to_first_answer_s": _median(firsts) if firsts else None,
            "start_cpu_s": _median([r["start_cpu_s"] for r in runs]),
        }
    report["targets"] = {
        "throughput_ratio_min": 0.9,
        "serial_p50_ratio_max": 2.0,
        "serial_p99_ratio_max": 4.0,
        "idle_rss_mb_max": 30,
        "rss_growth_mb_max": 2,
        "start_to_first_answer_s_max": 0.5,
    }
    report["load_average_after"] = os.getloadavg()
    report["rounds_detail"] = rounds
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

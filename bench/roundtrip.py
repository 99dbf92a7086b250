"""Command round trips through the agent (journal on) vs a bare paho echo: same broker, same run.

The baseline is ../shared/tools/paho_echo_baseline.py: a paho "device" that answers each request
with a JSON load and dump, nothing durable. The agent side is the real daemon (a separate
process, as in production) with an in-process ``simulated`` handler, so what is measured is the
agent's own cost: decode, journal (WAL, synchronous=FULL: two fsyncs per command), ordered
PUBACK, execute, journal the result, publish, forget after PUBACK. The service side of the
agent measurement is the baseline's own service loop, unchanged but for the topics.

Usage: python bench/roundtrip.py [--baseline PATH] [--requests N] [--window W] [--serial N]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
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
DEFAULT_BASELINE = REPO.parent / "shared" / "tools" / "paho_echo_baseline.py"


def run_baseline(script: Path, port: int, n: int, window: int) -> dict[str, Any]:
    """Run the bare paho echo baseline against the broker; returns its JSON line."""
    out = subprocess.run(
        [sys.executable, str(script), "127.0.0.1", str(port), str(n), str(window)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


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
    )
    agent = AgentProcess(config, workdir)
    agent.start()
    return agent


def measure_agent(
    tmp: Path, port: int, synchronous: str, args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    """One round against a freshly started daemon: idle RSS, windowed and serial runs."""
    workdir = tmp / f"agent-{synchronous}-{tag}"
    workdir.mkdir()
    agent = start_agent(workdir, port, synchronous)
    try:
        time.sleep(2.0)
        idle = rss_mb(agent.process.pid) if agent.process else float("nan")
        windowed = drive_agent(port, args.requests, args.window, f"w{tag}")
        serial = drive_agent(port, args.serial, 1, f"s{tag}")
        loaded = rss_mb(agent.process.pid) if agent.process else float("nan")
    finally:
        agent.stop()
    return {
        "windowed": windowed,
        "serial": serial,
        "idle_rss_mb": round(idle, 1),
        "rss_after_load_mb": round(loaded, 1),
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
    args = parser.parse_args()
    if not args.baseline.exists():
        parser.error(f"baseline script not found: {args.baseline}")

    rounds: dict[str, list[dict[str, Any]]] = {"baseline": [], "full": [], "normal": []}
    with tempfile.TemporaryDirectory(prefix="bench-roundtrip-") as tmp:
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

    report: dict[str, Any] = {"rounds": args.rounds, "load_average": os.getloadavg()}
    base_rps = median_of("baseline", "windowed", "rps")
    base_p50 = median_of("baseline", "serial", "p50_ms")
    report["baseline"] = {
        "windowed_rps": base_rps,
        "serial_p50_ms": base_p50,
        "serial_p99_ms": median_of("baseline", "serial", "p99_ms"),
    }
    for synchronous in ("full", "normal"):
        rps = median_of(synchronous, "windowed", "rps")
        p50 = median_of(synchronous, "serial", "p50_ms")
        report[f"agent_journal_{synchronous}"] = {
            "windowed_rps": rps,
            "serial_p50_ms": p50,
            "serial_p99_ms": median_of(synchronous, "serial", "p99_ms"),
            "throughput_ratio": round(rps / base_rps, 2),
            "serial_p50_ratio": round(p50 / base_p50, 2),
            "idle_rss_mb": _median([r["idle_rss_mb"] for r in rounds[synchronous]]),
            "rss_after_load_mb": _median([r["rss_after_load_mb"] for r in rounds[synchronous]]),
        }
    report["targets"] = {
        "throughput_ratio_min": 0.8,
        "serial_p50_ratio_max": 2.0,
        "idle_rss_mb_max": 30,
    }
    report["rounds_detail"] = rounds
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

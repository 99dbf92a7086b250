"""Connect bench: N real agents connect to Mosquitto, against the floor's N bare aiomqtt clients.

One Mosquitto, the floor first (../shared/tools/fleet_floor.py, its ``connect_s``), then the
fleet's agents (built as the simulator builds them) until every one is connected and every
filter accepted. ``--profile FILE`` writes a cProfile of the fleet's connect phase and prints
its top entries by own time.

Usage: python -m bench.fleet_connect [--devices 2000] [--profile /tmp/connect.prof]
Prints one JSON object. Measured on a shared 2-core machine: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.runtime.logging import configure_logging
from agent.sim.fleet.layout import build_layout
from agent.sim.fleet.runner import FleetRunner
from agent.sim.fleet.spec import ApplierSpec, CohortSpec, FleetSpec, HandlerSpec
from agent.sim.mosquitto import Mosquitto
from bench.fleet import DEFAULT_FLOOR, MOSQUITTO_EXTRA, raise_fd_limit, rss_kb, run_floor


def top_entries(profile: cProfile.Profile, count: int) -> list[str]:
    """The ``count`` functions with the most own time, one line each."""
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(count)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return [line.strip() for line in lines[start : start + count + 1] if line.strip()]


async def connect_fleet(
    port: int, devices: int, workdir: Path, profile: Path | None
) -> dict[str, Any]:
    """Start ``devices`` agents and wait until all are connected and subscribed."""
    spec = FleetSpec(
        cohorts=[CohortSpec(name="bench", count=devices)],
        handlers=[HandlerSpec(command_name="PING")],
        appliers=[ApplierSpec(section="s")],
        connect_concurrency=256,
    )
    slots = build_layout(spec)
    runner = FleetRunner(spec, slots, host="127.0.0.1", port=port, workdir=workdir)
    before = rss_kb()
    profiler = cProfile.Profile() if profile else None
    cpu0 = time.process_time()
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    await runner.start()
    await runner.wait_connected(max(120.0, devices * 0.05))
    if profiler:
        profiler.disable()
    result: dict[str, Any] = {
        "devices": devices,
        "connect_s": round(time.perf_counter() - started, 1),
        "connect_cpu_s": round(time.process_time() - cpu0, 1),
        "kb_per_device": round((rss_kb() - before) / devices, 1),
    }
    if profiler and profile:
        profiler.dump_stats(profile)
        result["profile"] = str(profile)
        result["top_by_own_time"] = top_entries(profiler, 25)
    await runner.stop()
    return result


async def run(devices: int, floor: Path, profile: Path | None) -> dict[str, Any]:
    """The floor and the fleet against one Mosquitto."""
    configure_logging("error", "console", stream=sys.stderr)
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="fleet-connect-") as tmp:
        workdir = Path(tmp)
        mosquitto = Mosquitto(
            workdir / "mosquitto", extra_config=MOSQUITTO_EXTRA, save_every_change=False
        )
        mosquitto.start()
        try:
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            result: dict[str, Any] = {
                "load_average_before": os.getloadavg(),
                "floor": run_floor(floor, devices, mosquitto.port),
            }
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            # The floor's whole process (start-up, connect, fan-out): CPU is steadier than
            # wall time on a shared machine, and bounds what its connects cost.
            result["floor_process_cpu_s"] = round(
                after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime, 1
            )
            result["fleet"] = await connect_fleet(mosquitto.port, devices, workdir / "run", profile)
        finally:
            mosquitto.stop()
    floor_s = (result["floor"] or {}).get("connect_s")
    if floor_s:
        result["connect_vs_floor"] = round(result["fleet"]["connect_s"] / max(floor_s, 0.1), 2)
    result["load_average_after"] = os.getloadavg()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--floor", type=Path, default=DEFAULT_FLOOR)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the connect phase")
    arguments = parser.parse_args()
    print(
        json.dumps(
            asyncio.run(run(arguments.devices, arguments.floor, arguments.profile)), indent=1
        )
    )
    sys.stdout.flush()
    os._exit(0)  # skip tearing down thousands of sockets one by one

"""What each layer of the daemon's imports adds to its resident memory, imported in order.

Usage: python bench/import_cost.py
Prints the Markdown table of the README's "Idle memory" section: each step runs in one fresh
interpreter, after the steps before it, and adds what VmRSS grew by (a shared library counts
once, where it is first loaded). Run it from compiled bytecode (a second run, or without
PYTHONDONTWRITEBYTECODE): compiling costs memory the installed daemon never spends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (label, statement): imported one after the other into one interpreter.
STEPS = [
    ("asyncio (and ssl with libcrypto, which it loads)", "import asyncio"),
    ("sqlite3", "import sqlite3"),
    (
        "paho-mqtt (with dnspython hidden, see `agent/transport/paho_bridge.py`)",
        "sys.modules['dns'] = None; import paho.mqtt.client; del sys.modules['dns']",
    ),
    (
        "structlog (with `rich` and `greenlet` hidden, see `agent/runtime/logging.py`)",
        "import agent.runtime.logging",
    ),
    ("pydantic, with `BaseModel`", "from pydantic import BaseModel"),
    ("the agent's models (their validators are built on first use)", "import agent.core.model"),
    ("the configuration models and their override reader", "import agent.config"),
    (
        "journal, transport, profile, executors (with ctypes for the subreaper), upgrade and"
        " gateway wiring, the daemon",
        "import agent.cli, agent.app.daemon, agent.app.build, agent.profiles.huawei_iotda",
    ),
]
# Loaded only when first needed: measured on top of the daemon, not part of its idle memory.
LAZY = [
    ("httpx (first download only)", "import httpx"),
    (
        "cryptography (first signed package only)",
        "import cryptography.hazmat.primitives.asymmetric.ed25519",
    ),
]

_PROBE = """
import json, sys
def rss():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
out = [rss()]
for statement in json.loads(sys.argv[1]):
    exec(statement)
    out.append(rss())
print(json.dumps(out))
"""


def measure() -> list[float]:
    """VmRSS in MB at start and after each step (daemon steps, then lazy ones)."""
    statements = [s for _, s in STEPS + LAZY]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(statements)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    return [float(v) for v in json.loads(done.stdout)]


def table(rss: list[float]) -> str:
    """The Markdown table for one measurement."""
    lines = [
        "| import | adds | total |",
        "|---|---|---|",
        f"| the interpreter | | {rss[0]:.1f} MB |",
    ]
    for index, (label, _) in enumerate(STEPS, start=1):
        lines.append(f"| {label} | {rss[index] - rss[index - 1]:.1f} MB | {rss[index]:.1f} MB |")
    for index, (label, _) in enumerate(LAZY, start=len(STEPS) + 1):
        lines.append(f"| {label} | {rss[index] - rss[index - 1]:.1f} MB | |")
    return "\n".join(lines)


def main() -> None:
    """Measure twice (the first run may compile) and print the second run's table."""
    measure()
    print(table(measure()))


if __name__ == "__main__":
    main()

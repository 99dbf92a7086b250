"""Identities and handlers for agents speaking Tencent IoT Hub, OceanConnect and desired state."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from tests.support.agents import write_handler

TENCENT_PRODUCT = "TESTPROD01"

# A desired-state applier: records each run; {"mode": "fail"} fails, {"mode": "part"} applies
# only "mode"; anything else is applied as desired.
APPLIER = """\
import json, os, sys
desired = json.load(sys.stdin)
with open(os.environ["RUNS_FILE"], "a") as fh:
    fh.write(json.dumps([os.environ["DEVICE_AGENT_SECTION"], desired]) + "\\n")
mode = desired.get("mode") if isinstance(desired, dict) else None
if mode == "fail":
    print(json.dumps({"error": "the actuator is stuck"}))
    sys.exit(3)
if mode == "part":
    print(json.dumps({"applied": {"mode": "part"}, "error": "speed out of range"}))
"""


def tencent_device(workdir: Path, device_name: str, **overrides: Any) -> dict[str, Any]:
    """A key-authenticated Tencent IoT Hub identity (the secret file is written)."""
    secret = workdir / "tencent-secret"
    secret.write_text(base64.b64encode(b"0123456789abcdef").decode() + "\n")
    return {
        "profile": "tencent-iothub",
        "product_id": TENCENT_PRODUCT,
        "device_name": device_name,
        "secret_file": str(secret),
        **overrides,
    }


def oceanconnect_device(workdir: Path, device_id: str) -> dict[str, Any]:
    """A Huawei OceanConnect identity (the secret file is written)."""
    secret = workdir / "secret"
    secret.write_text("test-device-secret-0123456789\n")
    return {"profile": "huawei-oceanconnect", "device_id": device_id, "secret_file": str(secret)}


def desired_section(
    workdir: Path, sections: tuple[str, ...] = ("light",), **extra: Any
) -> dict[str, Any]:
    """A ``[desired]`` table: a state file plus the recording applier for ``sections``."""
    handler = write_handler(workdir / "handlers", "apply", APPLIER)
    appliers = [
        {
            "section": name,
            "handler": {"argv": [str(handler)], "env": {"RUNS_FILE": str(workdir / "runs")}},
        }
        for name in sections
    ]
    return {"state_file": str(workdir / "state" / "desired.json"), "appliers": appliers, **extra}


def state_file(workdir: Path) -> dict[str, Any]:
    """The sections in the agent's state file (empty before the first write)."""
    path = workdir / "state" / "desired.json"
    return json.loads(path.read_text())["sections"] if path.exists() else {}


def applier_runs(workdir: Path) -> list[list[Any]]:
    """Every applier run so far: ``[section, desired]``."""
    path = workdir / "runs"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def spooled(workdir: Path) -> list[tuple[dict[str, Any], bytes]]:
    """Messages in the spool: description and content, in arrival order."""
    spool = workdir / "spool"
    if not spool.exists():
        return []
    out = []
    for meta_path in sorted(spool.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        out.append((meta, (spool / meta["content_file"]).read_bytes()))
    return out

"""The script installer and the exec child adapter: real executables, exit codes, output."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.app.build import upgrade_executors
from agent.config import AgentConfig
from agent.config.upgrades import ExecAdapter
from agent.core.errors import UpgradeFailed
from agent.core.model import CommandRequest, UpgradeProgress, UpgradeRequest, UpgradeStatus
from agent.gateway.adapters import ExecChildAdapter
from agent.gateway.registry import Child
from agent.journal.memory import MemoryJournal
from agent.pipeline.executor import Context
from agent.sim.packages import PackageServer
from tests.support.agents import write_handler

DEVICE = "dev-1"
IMAGE = os.urandom(100_000)
IMAGE_SHA = hashlib.sha256(IMAGE).hexdigest()

INSTALL_SCRIPT = """\
import hashlib, json, os, sys
phase, image, version = sys.argv[1:4]
with open({record!r}, "a") as fh:
    fh.write(json.dumps({{"phase": phase, "version": version,
                         "image_sha": hashlib.sha256(open(image, "rb").read()).hexdigest(),
                         "sha": os.environ["DEVICE_AGENT_SHA256"],
                         "previous": os.environ["DEVICE_AGENT_PREVIOUS_VERSION"]}}) + "\\n")
sys.exit({exit_code})
"""

ADAPTER = """\
import json, sys
request = json.load(sys.stdin)
op = request["op"]
if op == "install":
    if request["child"]["device_id"] == "full":
        paras = {"status": "low_storage", "description": "flash full"}
        print(json.dumps({"result_code": 1, "paras": paras}))
    else:
        print(json.dumps({"result_code": 0}))
elif op == "versions":
    print(json.dumps({"result_code": 0, "paras": {"fw_version": "3.3", "sw_version": None}}))
elif op == "command":
    print(json.dumps({"result_code": 0, "response_name": "OK", "paras": {"got": request["paras"]}}))
else:
    sys.exit(3)
"""


class RecordingUplink:
    agent_id = DEVICE

    async def send(self, events: list[Any]) -> None:
        return None

    def send_transient(self, events: list[Any]) -> None:
        return None


@pytest.fixture
def server() -> Iterator[PackageServer]:
    """A package server with the image."""
    with PackageServer() as instance:
        instance.add("/img", IMAGE)
        yield instance


async def _install_with_script(
    tmp_path: Path, server: PackageServer, exit_code: int
) -> tuple[UpgradeProgress, list[dict[str, Any]]]:
    handlers = tmp_path / "handlers"
    record = tmp_path / "record"
    body = INSTALL_SCRIPT.format(record=str(record), exit_code=exit_code)
    script = write_handler(handlers, "install", body)
    config = AgentConfig(
        device={"profile": "huawei-iotda", "device_id": DEVICE, "secret_file": str(tmp_path / "s")},
        mqtt={"host": "127.0.0.1"},
        commands={"allowed_dirs": [str(handlers)]},
        upgrades={
            "enabled": True,
            "state_dir": str(tmp_path / "state"),
            "firmware_version": "1.0",
            "allow_http_hosts": ["127.0.0.1"],
            "installer": "script",
            "script": {"argv": [str(script)]},
        },
    )
    journal = MemoryJournal()
    log = structlog.get_logger()
    executors = upgrade_executors(config, journal=journal, agent_id=DEVICE, command=None, log=log)  # type: ignore[arg-type]
    request = UpgradeRequest(
        key="k",
        device_id=DEVICE,
        version="2.0",
        url=server.url("/img"),
        file_size=len(IMAGE),
        sha256=IMAGE_SHA,
    )
    await journal.accept(
        DEVICE, key="k", device_id=DEVICE, kind="upgrade", request="{}", now=0.0, state="running"
    )
    ctx = Context(agent_id=DEVICE, received_at=0.0, log=log, uplink=RecordingUplink())  # type: ignore[arg-type]
    outcome = await executors["upgrade"].execute(request, ctx)
    (final,) = outcome.replies
    assert isinstance(final, UpgradeProgress)
    lines = record.read_text().splitlines() if record.exists() else []
    return final, [json.loads(line) for line in lines]


async def test_the_script_gets_the_verified_image_and_version_and_exit_0_succeeds(
    tmp_path: Path, server: PackageServer
) -> None:
    """``argv + [install, image, version]`` with the digest in the environment; exit 0 is done."""
    final, calls = await _install_with_script(tmp_path, server, 0)
    assert (final.status, final.version) == (UpgradeStatus.SUCCESS, "2.0")
    (call,) = calls
    assert (call["phase"], call["version"], call["previous"]) == ("install", "2.0", "1.0")
    assert call["sha"] == IMAGE_SHA
    assert call["image_sha"] == IMAGE_SHA


@pytest.mark.parametrize(
    ("exit_code", "status"),
    [
        (5, UpgradeStatus.LOW_STORAGE),
        (1, UpgradeStatus.DEVICE_BUSY),
        (42, UpgradeStatus.INSTALL_FAILED),
    ],
)
async def test_script_exit_codes_map_to_statuses(
    tmp_path: Path, server: PackageServer, exit_code: int, status: str
) -> None:
    """Configured exit codes name the failure; unlisted ones are installation failures."""
    final, _ = await _install_with_script(tmp_path, server, exit_code)
    assert final.status == status
    assert final.version == "1.0"


async def test_the_exec_adapter_speaks_json_over_stdin_and_stdout(tmp_path: Path) -> None:
    """install, versions and command operations, and a failure naming its status."""
    program = write_handler(tmp_path / "handlers", "child", ADAPTER)
    adapter = ExecChildAdapter(
        ExecAdapter(type="t", argv=[str(program)], timeout_s=10),
        allowed_dirs=[tmp_path / "handlers"],
        log=structlog.get_logger(),
    )
    child = Child(device_id="ok", type="t")
    await adapter.install(child, tmp_path / "image", "2.0", "firmware")
    with pytest.raises(UpgradeFailed) as failed:
        await adapter.install(
            Child(device_id="full", type="t"), tmp_path / "image", "2.0", "firmware"
        )
    assert (failed.value.status, failed.value.reason) == (UpgradeStatus.LOW_STORAGE, "flash full")
    assert await adapter.versions(child) == {"firmware": "3.3", "software": None}
    result = await adapter.command(
        child,
        CommandRequest(key="k", device_id="ok", correlation="r", command_name="X", paras={"a": 1}),
    )
    assert (result.result_code, result.paras) == (0, {"got": {"a": 1}})
    code, _ = await adapter.set_properties(child, [])
    assert code != 0  # the program does not support it (exit 3)

"""Version queries, the child registry and the connect-time reports, in process."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import structlog

from agent.app.build import upgrade_executors
from agent.config import AgentConfig
from agent.config.upgrades import GatewaySettings, UpgradeSettings
from agent.core.model import (
    ChildInfo,
    ChildrenChanged,
    ChildrenSyncRequest,
    ChildStatus,
    ChildStatusReport,
    CommandRequest,
    Outbound,
    UpgradeRequest,
    VersionQuery,
    VersionReport,
)
from agent.journal.memory import MemoryJournal
from agent.pipeline.executor import Context, Executor
from agent.profiles.huawei_iotda import HuaweiIotdaProfile

GW = "gw-1"
REPO = Path(__file__).resolve().parents[2]


class RecordingUplink:
    """Collects what is sent."""

    agent_id = GW

    def __init__(self) -> None:
        self.sent: list[Outbound] = []

    async def send(self, events: list[Outbound]) -> None:
        self.sent.extend(events)

    def send_transient(self, events: list[Outbound]) -> None:
        self.sent.extend(events)


class NoCommands:
    """The gateway's own command executor (not reached in these tests)."""

    async def execute(self, subtask: Any, ctx: Context) -> Any:
        raise AssertionError("the gateway's own handlers must not run for a child")

    async def recover(self, subtask: Any, state: str, ctx: Context) -> Any:
        raise AssertionError("not expected")


def _setup(
    tmp_path: Path, journal: MemoryJournal | None = None
) -> tuple[dict[str, Executor], MemoryJournal, RecordingUplink, Context]:
    settings: dict[str, Any] = {
        "enabled": True,
        "default_type": "sim",
        "adapters": [{"type": "sim", "kind": "simulated"}],
        "children": [{"device_id": "c-1", "type": "sim", "fw_version": "1.0", "sw_version": "s1"}],
    }
    config = AgentConfig(
        device={"profile": "huawei-iotda", "device_id": GW, "secret_file": str(tmp_path / "s")},
        mqtt={"host": "127.0.0.1"},
        upgrades={
            "enabled": True,
            "state_dir": str(tmp_path / "u"),
            "firmware_version": "7.1",
            "software_version": "app-3",
            "installer": "simulated",
            "simulated": {"rehearsal_only": True},
        },
        gateway=settings,
    )
    journal = journal or MemoryJournal()
    log = structlog.get_logger()
    executors = upgrade_executors(
        config, journal=journal, agent_id=GW, command=NoCommands(), log=log
    )
    uplink = RecordingUplink()
    ctx = Context(agent_id=GW, received_at=0.0, log=log, uplink=uplink)  # type: ignore[arg-type]
    return executors, journal, uplink, ctx


async def test_version_query_for_the_gateway_and_a_child_reports_what_each_runs(
    tmp_path: Path,
) -> None:
    """The device's versions come from the configuration, a child's from its entry."""
    executors, _, _, ctx = _setup(tmp_path)
    own = await executors["version_query"].execute(VersionQuery(key="q1", device_id=GW), ctx)
    child = await executors["version_query"].execute(VersionQuery(key="q2", device_id="c-1"), ctx)
    unknown = await executors["version_query"].execute(
        VersionQuery(key="q3", device_id="ghost"), ctx
    )
    assert own.replies == [VersionReport(device_id=GW, fw_version="7.1", sw_version="app-3")]
    assert child.replies == [VersionReport(device_id="c-1", fw_version="1.0", sw_version="s1")]
    assert not unknown.ok
    assert unknown.replies == []


async def test_platform_added_children_are_known_and_deleted_ones_forgotten(tmp_path: Path) -> None:
    """add/delete notifications change the registry (kept in the journal) and its version."""
    executors, journal, _, ctx = _setup(tmp_path)
    added = ChildrenChanged(
        key="a",
        device_id=GW,
        added=[ChildInfo(device_id="c-9", product_id="p", fw_version="0.9")],
        version=4,
    )
    await executors["children_changed"].execute(added, ctx)
    command = CommandRequest(key="k", device_id="c-9", correlation="r", command_name="PING")
    answer = await executors["command"].execute(command, ctx)
    assert answer.ok
    assert answer.replies[0].result.paras["child"] == "c-9"  # type: ignore[union-attr]
    report = await executors["version_query"].execute(VersionQuery(key="q", device_id="c-9"), ctx)
    assert report.replies == [VersionReport(device_id="c-9", fw_version="0.9")]

    removed = ChildrenChanged(key="d", device_id=GW, removed=["c-9"], version=5)
    await executors["children_changed"].execute(removed, ctx)
    gone = await executors["command"].execute(command, ctx)
    assert not gone.ok
    # A new agent over the same journal knows the version to sync from.
    again, _, uplink, _ = _setup(tmp_path)
    again_hook = again["children_changed"]
    again_hook._registry._journal = journal  # type: ignore[attr-defined]
    await again_hook.connected(uplink)  # type: ignore[attr-defined]
    assert ChildrenSyncRequest(device_id=GW, version=5) in uplink.sent


async def test_after_a_connect_versions_of_the_device_and_children_are_reported(
    tmp_path: Path,
) -> None:
    """The connect hook reports the children online, every version, and asks for changes.

    The child goes ONLINE first: the platform takes reports and sends work only for online
    devices.
    """
    executors, _, uplink, _ = _setup(tmp_path)
    await executors["children_changed"].connected(uplink)  # type: ignore[attr-defined]
    status = uplink.sent.pop(0)
    assert isinstance(status, ChildStatusReport)
    assert status.statuses == [ChildStatus(device_id="c-1", online=True)]
    assert uplink.sent == [
        VersionReport(device_id=GW, fw_version="7.1", sw_version="app-3"),
        VersionReport(device_id="c-1", fw_version="1.0", sw_version="s1"),
        ChildrenSyncRequest(device_id=GW, version=None),
    ]


def test_the_example_configuration_is_valid() -> None:
    """config/upgrades.example.toml parses with every key it documents."""
    data = tomllib.loads((REPO / "config" / "upgrades.example.toml").read_text())
    upgrades = UpgradeSettings(**data["upgrades"])
    gateway = GatewaySettings(**data["gateway"])
    assert upgrades.enabled
    assert upgrades.installer == "ab-slots"
    assert upgrades.ab_slots is not None
    assert gateway.enabled
    assert gateway.adapter_types() == {"default", "sim"}
    assert gateway.children[0].device_id == "child-meter-01"


async def test_a_sub_device_notification_keeps_the_configured_versions(tmp_path: Path) -> None:
    """Regression: an add notification with null versions wiped a configured child's versions.

    Captured before the fix: ``version_report`` paras ``{}`` and a progress report with
    ``"version": ""`` for the child.
    """
    executors, journal, uplink, ctx = _setup(tmp_path)
    notify = ChildrenChanged(
        key="n", device_id=GW, added=[ChildInfo(device_id="c-1", product_id="p")], version=1
    )
    await executors["children_changed"].execute(notify, ctx)

    query = await executors["version_query"].execute(VersionQuery(key="q", device_id="c-1"), ctx)
    assert query.replies == [VersionReport(device_id="c-1", fw_version="1.0", sw_version="s1")]
    refused = UpgradeRequest(
        key="u", device_id="c-1", version="2.0", url="https://127.0.0.1/x", file_name="../x"
    )
    await journal.accept(
        GW, key="u", device_id="c-1", kind="upgrade", request="{}", now=0.0, state="running"
    )
    outcome = await executors["upgrade"].execute(refused, ctx)
    (final,) = outcome.replies
    (publish,) = HuaweiIotdaProfile(GW).encode(final)
    paras = json.loads(publish.payload)["services"][0]["paras"]
    assert paras["version"] == "1.0"
    await executors["children_changed"].connected(uplink)  # type: ignore[attr-defined]
    assert VersionReport(device_id="c-1", fw_version="1.0", sw_version="s1") in uplink.sent


async def test_a_platform_added_childs_versions_survive_a_restart_and_are_never_empty(
    tmp_path: Path,
) -> None:
    """The registry keeps what the platform said; a child nobody knows a version of is skipped."""
    journal = MemoryJournal()
    executors, _, _, ctx = _setup(tmp_path, journal)
    added = ChildrenChanged(
        key="a",
        device_id=GW,
        added=[
            ChildInfo(device_id="c-8", product_id="p", sw_version="app-1"),
            ChildInfo(device_id="c-9", product_id="p"),
        ],
        version=2,
    )
    await executors["children_changed"].execute(added, ctx)

    again, _, uplink, ctx = _setup(tmp_path, journal)
    query = await again["version_query"].execute(VersionQuery(key="q", device_id="c-8"), ctx)
    assert query.replies == [VersionReport(device_id="c-8", sw_version="app-1")]
    unknown = await again["version_query"].execute(VersionQuery(key="q2", device_id="c-9"), ctx)
    assert not unknown.ok
    assert unknown.replies == []
    await again["children_changed"].connected(uplink)  # type: ignore[attr-defined]
    reports = [e for e in uplink.sent if isinstance(e, VersionReport)]
    assert {r.device_id for r in reports} == {GW, "c-1", "c-8"}
    assert all(r.fw_version or r.sw_version for r in reports)

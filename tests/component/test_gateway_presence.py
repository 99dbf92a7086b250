"""Child presence in process: ONLINE after connect and add, OFFLINE when gone, add and delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from agent.app.build import upgrade_executors
from agent.config import AgentConfig
from agent.core.model import (
    ChildInfo,
    ChildPropertiesReport,
    ChildrenAddRequest,
    ChildrenChanged,
    ChildrenDeleteRequest,
    ChildStatusReport,
    CommandRequest,
    Outbound,
    VersionQuery,
    VersionReport,
)
from agent.gateway.adapters import Presence, SimulatedChildAdapter
from agent.gateway.presence import ChildPresence
from agent.journal.memory import MemoryJournal
from agent.pipeline.executor import Context
from agent.upgrade.hooks import ConnectHook

GW = "gw-1"


class RecordingUplink:
    """Collects what is sent."""

    agent_id = GW

    def __init__(self) -> None:
        self.sent: list[Outbound] = []

    async def send(self, events: list[Outbound]) -> None:
        self.sent.extend(events)

    def send_transient(self, events: list[Outbound]) -> None:
        self.sent.extend(events)

    def take(self, kind: type[Any]) -> list[Any]:
        """The events of ``kind`` sent so far (and forget them)."""
        found = [e for e in self.sent if isinstance(e, kind)]
        self.sent = [e for e in self.sent if not isinstance(e, kind)]
        return found


class Gateway:
    """A gateway's executors with one simulated adapter, as wired for the daemon."""

    def __init__(self, tmp_path: Path, *, manage: bool = False) -> None:
        config = AgentConfig(
            device={"profile": "huawei-iotda", "device_id": GW, "secret_file": str(tmp_path / "s")},
            mqtt={"host": "127.0.0.1"},
            upgrades={
                "enabled": True,
                "state_dir": str(tmp_path / "u"),
                "installer": "simulated",
                "simulated": {"rehearsal_only": True},
            },
            gateway={
                "enabled": True,
                "default_type": "sim",
                "presence_interval_s": 0,
                "manage_children": manage,
                "adapters": [{"type": "sim", "kind": "simulated"}],
                "children": [
                    {"device_id": "c-1", "type": "sim", "fw_version": "1.0"},
                    {"device_id": "c-2", "type": "sim", "fw_version": "1.0"},
                ],
            },
        )
        log = structlog.get_logger()
        self.executors = upgrade_executors(
            config,
            journal=MemoryJournal(),
            agent_id=GW,
            command=None,  # type: ignore[arg-type]
            log=log,
        )
        hook = self.executors["children_changed"]
        assert isinstance(hook, ConnectHook)
        self.hook = hook
        presence = hook._presence
        assert isinstance(presence, ChildPresence)
        self.presence = presence
        adapter = presence._adapters["sim"]
        assert isinstance(adapter, SimulatedChildAdapter)
        self.adapter = adapter
        self.uplink = RecordingUplink()
        self.ctx = Context(agent_id=GW, received_at=0.0, log=log, uplink=self.uplink)  # type: ignore[arg-type]

    def statuses(self) -> dict[str, str]:
        """Every status reported since the last call: child -> ONLINE/OFFLINE (the last one)."""
        found: dict[str, str] = {}
        for report in self.uplink.take(ChildStatusReport):
            for status in report.statuses:
                found[status.device_id] = "ONLINE" if status.online else "OFFLINE"
        return found


async def test_children_go_online_after_a_connect_and_offline_when_their_adapter_says_so(
    tmp_path: Path,
) -> None:
    """An adapter that cannot tell leaves children ONLINE; once it lists them, it decides."""
    gw = Gateway(tmp_path)
    await gw.hook.connected(gw.uplink)  # type: ignore[arg-type]
    assert gw.statuses() == {"c-1": "ONLINE", "c-2": "ONLINE"}
    await gw.presence.check(gw.uplink)  # type: ignore[arg-type]
    assert gw.statuses() == {}  # nothing changed, nothing reported

    gw.adapter.attach(Presence(ChildInfo(device_id="c-1")))
    gw.adapter.attach(Presence(ChildInfo(device_id="c-2"), online=False))
    await gw.presence.check(gw.uplink)  # type: ignore[arg-type]
    assert gw.statuses() == {"c-2": "OFFLINE"}
    gw.adapter.detach("c-1")  # gone altogether: offline too, but never deleted (configured)
    gw.adapter.attach(Presence(ChildInfo(device_id="c-2")))
    await gw.presence.check(gw.uplink)  # type: ignore[arg-type]
    assert gw.statuses() == {"c-1": "OFFLINE", "c-2": "ONLINE"}
    assert gw.uplink.take(ChildrenDeleteRequest) == []
    # After a reconnect the platform hears about every child again.
    await gw.hook.connected(gw.uplink)  # type: ignore[arg-type]
    assert gw.statuses() == {"c-1": "OFFLINE", "c-2": "ONLINE"}


async def test_a_child_the_platform_adds_goes_online_and_keeps_its_versions(
    tmp_path: Path,
) -> None:
    """add_sub_device_notify: the new child is reported ONLINE with the change's answer."""
    gw = Gateway(tmp_path)
    await gw.hook.connected(gw.uplink)  # type: ignore[arg-type]
    gw.statuses()
    notify = ChildrenChanged(
        key="n",
        device_id=GW,
        added=[
            ChildInfo(device_id="c-9", product_id="p", fw_version="0.9"),
            ChildInfo(device_id="c-1"),
        ],
        version=3,
    )
    outcome = await gw.executors["children_changed"].execute(notify, gw.ctx)
    (report,) = outcome.replies
    assert isinstance(report, ChildStatusReport)
    assert {s.device_id: s.online for s in report.statuses} == {"c-9": True, "c-1": True}
    answer = await gw.executors["version_query"].execute(
        VersionQuery(key="q", device_id="c-1"), gw.ctx
    )
    assert answer.replies == [VersionReport(device_id="c-1", fw_version="1.0")]


async def test_discovered_children_are_added_and_lost_ones_deleted(tmp_path: Path) -> None:
    """manage_children: a new child is asked for, answered, ONLINE and served; a lost one goes."""
    gw = Gateway(tmp_path, manage=True)
    for child in ("c-1", "c-2"):
        gw.adapter.attach(Presence(ChildInfo(device_id=child)))
    found = ChildInfo(device_id="p1_meter-7", node_id="meter-7", product_id="p1", sw_version="s7")
    services = [{"service_id": "analog", "properties": {"v": 230}}]
    gw.adapter.attach(Presence(found, services=services))
    gw.adapter.attach(Presence(ChildInfo(device_id="no-product")))
    await gw.hook.connected(gw.uplink)  # type: ignore[arg-type]
    (request,) = gw.uplink.take(ChildrenAddRequest)
    assert [c.device_id for c in request.children] == ["p1_meter-7"]  # no product id: not added
    assert gw.statuses() == {"c-1": "ONLINE", "c-2": "ONLINE"}
    await gw.presence.check(gw.uplink)  # type: ignore[arg-type]
    assert gw.uplink.take(ChildrenAddRequest) == []  # asked once

    answer = ChildrenChanged(
        key="a", device_id=GW, added=[found.model_copy(update={"fw_version": None})]
    )
    outcome = await gw.executors["children_changed"].execute(answer, gw.ctx)
    assert [(s.device_id, s.online) for r in outcome.replies for s in r.statuses] == [  # type: ignore[union-attr]
        ("p1_meter-7", True)
    ]
    command = CommandRequest(key="k", device_id="p1_meter-7", correlation="r", command_name="PING")
    served = await gw.executors["command"].execute(command, gw.ctx)
    assert served.ok  # the adapter that found it drives it
    await gw.presence.check(gw.uplink)  # type: ignore[arg-type]
    (properties,) = gw.uplink.take(ChildPropertiesReport)
    assert properties.children == {"p1_meter-7": services}

    gw.adapter.detach("p1_meter-7")
    await gw.presence.check(gw.uplink)  # type: ignore[arg-type]
    assert gw.statuses() == {"p1_meter-7": "OFFLINE"}
    (delete,) = gw.uplink.take(ChildrenDeleteRequest)
    assert delete.children == ["p1_meter-7"]
    await gw.presence.check(gw.uplink)  # type: ignore[arg-type]
    assert gw.uplink.take(ChildrenDeleteRequest) == []  # asked once
    deleted = ChildrenChanged(key="d", device_id=GW, removed=["p1_meter-7"])
    await gw.executors["children_changed"].execute(deleted, gw.ctx)
    gone = await gw.executors["command"].execute(command, gw.ctx)
    assert not gone.ok


async def test_a_child_the_platform_names_differently_is_matched_by_its_node_id(
    tmp_path: Path,
) -> None:
    """The platform may answer with its own device id: the node id ties it to the adapter's."""
    gw = Gateway(tmp_path, manage=True)
    for child in ("c-1", "c-2"):
        gw.adapter.attach(Presence(ChildInfo(device_id=child)))
    gw.adapter.attach(Presence(ChildInfo(device_id="meter-7", node_id="meter-7", product_id="p1")))
    await gw.hook.connected(gw.uplink)  # type: ignore[arg-type]
    (request,) = gw.uplink.take(ChildrenAddRequest)
    assert [c.node_id for c in request.children] == ["meter-7"]

    named = ChildInfo(device_id="p1_meter-7", node_id="meter-7", product_id="p1")
    outcome = await gw.executors["children_changed"].execute(
        ChildrenChanged(key="a", device_id=GW, added=[named]), gw.ctx
    )
    assert [(s.device_id, s.online) for r in outcome.replies for s in r.statuses] == [  # type: ignore[union-attr]
        ("p1_meter-7", True)
    ]
    gw.statuses()
    await gw.presence.check(gw.uplink)  # type: ignore[arg-type]
    assert gw.statuses() == {}  # still online: the adapter lists it under its node id
    assert gw.uplink.take(ChildrenDeleteRequest) == []
    assert gw.uplink.take(ChildrenAddRequest) == []
    command = CommandRequest(key="k", device_id="p1_meter-7", correlation="r", command_name="PING")
    assert (await gw.executors["command"].execute(command, gw.ctx)).ok


async def test_a_platform_added_child_is_online_only_if_its_adapter_lists_it(
    tmp_path: Path,
) -> None:
    """An adapter that answers decides a new child's first status too (no ONLINE-then-OFFLINE)."""
    gw = Gateway(tmp_path)
    for child in ("c-1", "c-2", "c-5"):
        gw.adapter.attach(Presence(ChildInfo(device_id=child)))
    await gw.hook.connected(gw.uplink)  # type: ignore[arg-type]
    gw.statuses()
    notify = ChildrenChanged(
        key="n",
        device_id=GW,
        added=[ChildInfo(device_id="c-5", product_id="p"), ChildInfo(device_id="c-6")],
    )
    outcome = await gw.executors["children_changed"].execute(notify, gw.ctx)
    (report,) = outcome.replies
    assert isinstance(report, ChildStatusReport)
    assert {s.device_id: s.online for s in report.statuses} == {"c-5": True, "c-6": False}
    await gw.presence.check(gw.uplink)  # type: ignore[arg-type]
    assert gw.statuses() == {}

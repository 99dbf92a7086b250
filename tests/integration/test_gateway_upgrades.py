"""Gateway mode: a batch task's children upgraded from one download, each reported on its own."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from agent.sim.mosquitto import Mosquitto
from agent.sim.packages import PackageServer
from tests.support.agents import AgentProcess, agent_config
from tests.support.platform import PlatformClient
from tests.support.upgrades import event_reports, finals

pytestmark = pytest.mark.broker

GATEWAY = "gw-1"
CHILDREN = [f"child-{i:02d}" for i in range(20)]
FAILING = ["child-03", "child-07", "child-11"]
PACKAGE = os.urandom(2_000_000)
PACKAGE_SHA = hashlib.sha256(PACKAGE).hexdigest()
DEADLINE_S = 4.0


def _gateway(tmp_path: Path, port: int) -> AgentProcess:
    config = agent_config(
        tmp_path,
        port,
        device_id=GATEWAY,
        upgrades={
            "enabled": True,
            "state_dir": str(tmp_path / "upgrades"),
            "firmware_version": "9.0",
            "allow_http_hosts": ["127.0.0.1"],
            "install_concurrency": 4,
            "installer": "simulated",
            "simulated": {"rehearsal_only": True},
        },
        gateway={
            "enabled": True,
            "task_deadline_s": DEADLINE_S,
            "default_type": "sim",
            "adapters": [
                {"type": "sim", "kind": "simulated", "duration_s": 0.1, "fail_children": FAILING}
            ],
            "children": [
                {"device_id": child, "type": "sim", "fw_version": "1.0"} for child in CHILDREN
            ],
        },
    )
    return AgentProcess(config, tmp_path)


@pytest.mark.slow
def test_twenty_children_one_download_seventeen_successes_three_failures(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """20 child events of one task: one download, 17 success and 3 failure reports per child."""
    agent = _gateway(tmp_path, broker.port)
    agent.start()
    with (
        PlatformClient(broker.port, GATEWAY, client_id="platform-gw") as platform,
        PackageServer() as server,
    ):
        server.add("/fw-2.0.bin", PACKAGE)
        for child in CHILDREN:
            platform.send(
                platform.side.version_query(
                    object_device_id=child, task_id="task-A", sub_device_count=20
                )
            )
        platform.wait_for(
            lambda: {c for c, _ in event_reports(platform, "version_report")} >= set(CHILDREN),
            30,
            "a version report for every child",
        )
        for child in CHILDREN:
            platform.send(
                platform.side.upgrade(
                    version="2.0",
                    # Each child gets its own signed URL for the same package.
                    url=server.url(f"/fw-2.0.bin?device={child}&token=t-{child}"),
                    sign=PACKAGE_SHA,
                    file_size=len(PACKAGE),
                    object_device_id=child,
                    task_id="task-A",
                    sub_device_count=20,
                )
            )
        platform.wait_for(
            lambda: set(finals(platform)) >= set(CHILDREN), 60, "a result for every child"
        )
        results = finals(platform)
        versions = dict(event_reports(platform, "version_report"))
    assert agent.stop() == 0

    assert sorted(results) == sorted(CHILDREN)
    assert all(len(r) == 1 for r in results.values()), results
    succeeded = sorted(c for c, (r,) in results.items() if r.result_code == 0)
    failed = sorted(c for c, (r,) in results.items() if r.result_code != 0)
    assert succeeded == sorted(set(CHILDREN) - set(FAILING))
    assert failed == FAILING
    assert all(results[c][0].version == "2.0" and results[c][0].progress == 100 for c in succeeded)
    assert all(results[c][0].result_code == 10 and results[c][0].version == "1.0" for c in failed)
    assert versions["child-00"] == {"fw_version": "1.0"}  # answered before the upgrade
    # Downloaded once for the whole task, whatever each child's URL said.
    assert len(server.served("/fw-2.0.bin")) == 1


@pytest.mark.slow
def test_a_child_that_never_gets_its_event_is_reported_at_the_deadline(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """sub_device_count 20 but 19 events: the silent child gets a failure at the deadline."""
    agent = _gateway(tmp_path, broker.port)
    agent.start()
    silent = "child-19"
    with (
        PlatformClient(broker.port, GATEWAY, client_id="platform-gw2") as platform,
        PackageServer() as server,
    ):
        server.add("/fw-3.0.bin", PACKAGE)
        for child in CHILDREN:
            if child == silent:
                continue
            platform.send(
                platform.side.upgrade(
                    version="3.0",
                    url=server.url("/fw-3.0.bin"),
                    sign=PACKAGE_SHA,
                    file_size=len(PACKAGE),
                    object_device_id=child,
                    task_id="task-B",
                    sub_device_count=20,
                )
            )
        platform.wait_for(lambda: silent in finals(platform), 60, "the silent child's report")
        platform.wait_for(
            lambda: set(finals(platform)) >= set(CHILDREN), 60, "a result for every child"
        )
        results = finals(platform)
    assert agent.stop() == 0

    (report,) = results[silent]
    assert report.result_code == 255
    assert "task-B" in report.description
    assert report.version == "1.0"
    (missing,) = agent.events("upgrade.task.children_missing")
    assert missing["children"] == [silent]
    assert missing["expected"] == 20
    assert missing["received"] == 19


def test_child_commands_and_property_sets_go_to_the_child_adapter(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A command or property set with object_device_id reaches the child; unknown ones fail."""
    agent = _gateway(tmp_path, broker.port)
    agent.start()
    with PlatformClient(broker.port, GATEWAY, client_id="platform-gw3") as platform:
        platform.send(platform.side.command("c-1", "PING", {"n": 1}, object_device_id="child-05"))
        platform.send(platform.side.command("c-2", "PING", {}, object_device_id="ghost"))
        topic = f"$oc/devices/{GATEWAY}/sys/properties/set/request_id=p-1"
        body = (
            b'{"object_device_id":"child-05","services":[{"service_id":"s","properties":{"v":1}}]}'
        )
        platform.client.publish(topic, body, 1)
        platform.wait_for(
            lambda: (
                {"c-1", "c-2"} <= set(platform.command_answers())
                and any(a.request_id == "p-1" for a in platform.answers())
            ),
            30,
            "the answers",
        )
        answers = platform.command_answers()
        property_set = next(a for a in platform.answers() if a.request_id == "p-1")
    assert agent.stop() == 0

    assert answers["c-1"][0].result_code == 0
    assert answers["c-1"][0].paras["child"] == "child-05"
    assert answers["c-2"][0].result_code != 0
    assert answers["c-2"][0].paras["error"] == "unknown_child"
    assert property_set.result_code == 0

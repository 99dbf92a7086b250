"""A fleet across a 3-node NATS cluster: the task service on node 1, shards on nodes 2 and 3.

Each node has its own MQTT listener; sessions, QoS 1 messages and retained messages live in
JetStream, replicated across the nodes. Agents are given every node (``mqtt.hosts``), their
own first: when a node dies they move on and find their session on the next.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from agent.sim.emulator.records import Task
from agent.sim.emulator.service import Emulator
from agent.sim.fleet.client import TaskClient
from agent.sim.fleet.spec import TaskSpec
from agent.sim.nats import NatsCluster, nats_binary
from tests.support.agents import REPO
from tests.support.sim import emulator

pytestmark = [
    pytest.mark.slow,
    pytest.mark.nats,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        nats_binary() is None,
        reason="nats-server is not installed (apt-get install nats-server; .ci/run does)",
    ),
]

DEVICES = 200  # 100 per shard
# Each agent's subscriptions are JetStream consumers, replicated on three nodes: a modest
# connect rate keeps their creation within NATS's 4 s API timeout on a busy machine.
SCENARIO = f"""
[fleet]
journal = "memory"
connect_concurrency = 16
[[fleet.cohorts]]
name = "meter"
count = {DEVICES}
[[fleet.handlers]]
command_name = "PING"
latency_s = 0.05
[[fleet.handlers]]
command_name = "SLOW"
latency_s = 5.0
[[fleet.appliers]]
section = "state"
latency_s = 0.05
[fleet.upgrades]
fw_version = "1.0.0"
install_s = 0.2
"""
ENDED = {"Success", "Fail", "PartialSuccess", "Stopped"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nodes on free loopback ports, JetStream stores under ``tmp_path``."""
    instance = NatsCluster(tmp_path / "nats", consumer_memory_storage=True)
    instance.start()
    yield instance
    instance.stop()


def _read_event(stream: IO[str], event: str, deadline: float) -> dict[str, Any]:
    """Read JSON lines until one has ``event`` (bounded by ``deadline``)."""
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
    raise AssertionError(f"no {event} line before the deadline")


class Shards:
    """``device-agent simulate --shard i/n`` processes, shard i on node i + 1 first."""

    def __init__(self, tmp_path: Path, cluster: NatsCluster, url: str, count: int) -> None:
        scenario = tmp_path / "fleet.toml"
        scenario.write_text(SCENARIO)
        self.processes: list[subprocess.Popen[str]] = []
        for index in range(count):
            first = 1 + index % (len(cluster.nodes) - 1)  # node 2, node 3, node 2, ...
            with (tmp_path / f"shard-{index}.log").open("w") as log:
                self.processes.append(
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
                            str(tmp_path / f"shard-{index}"),
                        ],
                        stdout=subprocess.PIPE,
                        stderr=log,
                        cwd=REPO,
                        text=True,
                    )
                )

    async def ready(self) -> int:
        """Wait until every shard has its agents connected; how many agents in all."""
        agents = 0
        for process in self.processes:
            assert process.stdout is not None
            line = await asyncio.to_thread(
                _read_event, process.stdout, "shard.ready", time.monotonic() + 120
            )
            agents += int(line["agents"])
        return agents

    async def stop(self) -> list[dict[str, Any]]:
        """SIGTERM every shard; their ``shard.stopped`` lines (executions, repeated)."""
        stopped = []
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            assert process.stdout is not None
            stopped.append(
                await asyncio.to_thread(
                    _read_event, process.stdout, "shard.stopped", time.monotonic() + 60
                )
            )
            assert await asyncio.to_thread(process.wait, 30) == 0
        return stopped

    def kill(self) -> None:
        """Leave nothing running (a failed test)."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture
async def task_service(tmp_path: Path, cluster: NatsCluster) -> AsyncIterator[Emulator]:
    """The emulator, connected through node 1 (the others as fallbacks)."""
    async with emulator(
        tmp_path,
        broker_url=cluster.urls(first=0),
        presence="uplink",  # NATS publishes no MQTT connect notices (docs/simulator.md)
        command_timeout_s=120,
        version_timeout_s=120,
    ) as emu:
        yield emu


@pytest.fixture
async def shards(
    tmp_path: Path, cluster: NatsCluster, task_service: Emulator
) -> AsyncIterator[Shards]:
    """Two shards, one on node 2 and one on node 3, every agent connected."""
    running = Shards(tmp_path, cluster, task_service.url, 2)
    try:
        assert await running.ready() == DEVICES
        yield running
    finally:
        running.kill()


def _mqtt_clients(cluster: NatsCluster, index: int) -> int:
    """MQTT connections node ``index`` serves (its monitoring endpoint)."""
    url = f"http://127.0.0.1:{cluster.nodes[index].http_port}/connz?limit=100000"
    with urllib.request.urlopen(url, timeout=10) as response:
        connz = json.loads(response.read())
    return sum(1 for conn in connz.get("connections") or [] if conn.get("mqtt_client"))


def _task(name: str, task_type: str, document: dict[str, Any]) -> TaskSpec:
    body = {
        "task_name": name,
        "task_type": task_type,
        "targets_filter": {"group_ids": ["meter"]},
        "document": document,
    }
    return TaskSpec(name=name, api="huawei-iotda", body=body)


async def _until_ended(emu: Emulator, task_ids: list[str], timeout: float) -> list[Task]:
    deadline = time.monotonic() + timeout
    tasks = [emu.engine.tasks[task_id] for task_id in task_ids]
    while not all(task.finished_at is not None for task in tasks):
        if time.monotonic() > deadline:
            progress = [(t.task_type, t.progress()) for t in tasks]
            raise AssertionError(f"tasks still running after {timeout} s: {progress}")
        await asyncio.sleep(0.1)
    return tasks


async def test_commands_shadows_and_firmware_succeed_across_the_cluster(
    cluster: NatsCluster, task_service: Emulator, shards: Shards
) -> None:
    """createCommands, updateDeviceShadows and firmwareUpgrade over 200 agents: all Success."""
    # Every agent is connected to some node (its own first; a busy node's connect timeouts
    # send some on to the next), and the task service to node 1.
    assert sum(_mqtt_clients(cluster, i) for i in range(3)) == DEVICES + 1
    data = hashlib.sha256(b"firmware").digest() * 2048
    package = await task_service.registry.add_package(
        data, name="meter-fw", version="2.0.0", package_type="firmwarePackage"
    )
    client = TaskClient(task_service.url)
    try:
        submitted = [
            await client.submit(spec)
            for spec in (
                _task("ping", "createCommands", {"command_name": "PING"}),
                _task(
                    "shadow",
                    "updateDeviceShadows",
                    {"shadow": [{"service_id": "state", "desired": {"interval": 900}}]},
                ),
                _task("firmware", "firmwareUpgrade", {"package_id": package.package_id}),
            )
        ]
    finally:
        await client.close()
    assert [s.error for s in submitted] == [None, None, None]
    tasks = await _until_ended(task_service, [s.task_id or "" for s in submitted], 180)
    stopped = await shards.stop()

    for task in tasks:
        assert task.status(time.time()) == "Success", (task.task_type, task.progress())
        assert task.counts["success"] == DEVICES
    assert [line["repeated"] for line in stopped] == [0, 0]
    # Once per device each: the command, the shadow (no connection was lost; after a reconnect
    # it may be applied again, being idempotent), the upgrade's version query and its install.
    for kind in ("command", "desired_state", "version_query", "upgrade"):
        assert sum(line["by_kind"].get(kind, 0) for line in stopped) == DEVICES, kind
    assert len(task_service.downloads.per_connection(package.package_id)) == DEVICES


async def test_a_node_killed_mid_task_loses_no_subtask_and_runs_none_twice(
    cluster: NatsCluster, task_service: Emulator, shards: Shards
) -> None:
    """Node 2 dies while its agents run 5 s commands: they finish through node 3, once each."""
    client = TaskClient(task_service.url)
    try:
        answer = await client.submit(_task("slow", "createCommands", {"command_name": "SLOW"}))
    finally:
        await client.close()
    assert answer.task_id is not None
    task = task_service.engine.tasks[answer.task_id]
    deadline = time.monotonic() + 60
    # Every command sent: work under way on both shards. The handlers take 5 s, so they are
    # still running when the node dies, however busy the machine (waiting for the first
    # answers instead could see them all in at once, with nothing left to interrupt).
    while task.counts["processing"] < DEVICES:
        assert time.monotonic() < deadline, task.progress()
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # the commands reach the agents
    assert task.terminal < DEVICES
    await asyncio.to_thread(cluster.kill, 1)

    (ended,) = await _until_ended(task_service, [answer.task_id], 180)
    failed = [
        (sub.device_id, sub.attempts, sub.error_code, sub.error_msg)
        for sub in task_service.engine.subtasks[answer.task_id]
        if sub.state != "success"
    ]
    assert ended.status(time.time()) == "Success", (ended.progress(), failed)
    assert ended.counts["success"] == DEVICES
    # Node 2's agents are on the surviving nodes.
    deadline = time.monotonic() + 60
    while (alive := _mqtt_clients(cluster, 0) + _mqtt_clients(cluster, 2)) < DEVICES + 1:
        assert time.monotonic() < deadline, alive
        await asyncio.sleep(0.2)
    stopped = await shards.stop()

    assert [line["repeated"] for line in stopped] == [0, 0]
    assert sum(line["by_kind"]["command"] for line in stopped) == DEVICES
    assert sum(line["executions"] for line in stopped) == DEVICES

"""A NATS cluster with MQTT on every node, run as child processes on loopback ports.

NATS (nats-server 2.9+) speaks MQTT 3.1.1 and keeps MQTT sessions, QoS 1 messages and
retained messages in JetStream, replicated across the cluster: an agent whose node dies
reconnects to another node and finds its session there. What matters for the agent (QoS 2 is
refused, topic characters, client ids) is in docs/simulator.md, "Running a fleet across
machines".
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from agent.core.errors import AgentError
from agent.sim.mosquitto import free_port


def nats_binary() -> str | None:
    """Path of the nats-server executable, if installed (Debian puts it in /usr/sbin)."""
    return shutil.which("nats-server") or next(
        (
            p
            for p in ("/usr/sbin/nats-server", "/usr/local/bin/nats-server")
            if os.access(p, os.X_OK)
        ),
        None,
    )


@dataclass(frozen=True, slots=True)
class NatsNode:
    """Where one node listens."""

    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    http_port: int

    @property
    def mqtt_url(self) -> str:
        """``mqtt://127.0.0.1:port`` of the node's MQTT listener."""
        return f"mqtt://127.0.0.1:{self.mqtt_port}"


def node_config(
    node: NatsNode,
    nodes: list[NatsNode],
    store_dir: Path,
    *,
    stream_replicas: int | None = None,
    consumer_replicas: int | None = None,
    consumer_memory_storage: bool = False,
    max_ack_pending: int = 1024,
) -> str:
    """The configuration file of one node (JetStream on, MQTT on, routes to every node)."""
    routes = ", ".join(f"nats-route://127.0.0.1:{n.cluster_port}" for n in nodes)
    mqtt = [
        f"listen: 127.0.0.1:{node.mqtt_port}",
        # QoS 1 messages a subscription may have unacknowledged (per filter, like a receive
        # window); the task service's link receives every device's answers on a few filters.
        f"max_ack_pending: {max_ack_pending}",
    ]
    if stream_replicas is not None:
        mqtt.append(f"stream_replicas: {stream_replicas}")
    if consumer_replicas is not None:
        mqtt.append(f"consumer_replicas: {consumer_replicas}")
    if consumer_memory_storage:
        mqtt.append("consumer_memory_storage: true")
    lines = [
        # JetStream in a cluster needs a name per server; MQTT needs JetStream.
        f"server_name: {node.name}",
        f"listen: 127.0.0.1:{node.client_port}",
        f"http: 127.0.0.1:{node.http_port}",
        f'jetstream {{ store_dir: "{store_dir}" }}',
        "cluster {",
        "  name: device-agent-sim",
        f"  listen: 127.0.0.1:{node.cluster_port}",
        f"  routes: [{routes}]",
        "}",
        "mqtt {",
        *(f"  {line}" for line in mqtt),
        "}",
    ]
    return "\n".join(lines) + "\n"


class NatsCluster:
    """``size`` nats-server processes forming one cluster, each with an MQTT listener."""

    def __init__(
        self,
        workdir: Path,
        *,
        size: int = 3,
        stream_replicas: int | None = None,
        consumer_replicas: int | None = None,
        consumer_memory_storage: bool = False,
        max_ack_pending: int = 1024,
    ) -> None:
        binary = nats_binary()
        if binary is None:
            msg = "nats-server is not installed (Debian/Ubuntu: apt-get install nats-server)"
            raise AgentError(msg)
        self.binary = binary
        self.workdir = workdir
        self.nodes = [
            NatsNode(f"n{i + 1}", free_port(), free_port(), free_port(), free_port())
            for i in range(size)
        ]
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        workdir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            self.config_path(node).write_text(
                node_config(
                    node,
                    self.nodes,
                    workdir / node.name / "jetstream",
                    stream_replicas=stream_replicas,
                    consumer_replicas=consumer_replicas,
                    consumer_memory_storage=consumer_memory_storage,
                    max_ack_pending=max_ack_pending,
                )
            )

    def config_path(self, node: NatsNode) -> Path:
        """The node's configuration file."""
        return self.workdir / f"{node.name}.conf"

    def log_path(self, node: NatsNode) -> Path:
        """The node's log file."""
        return self.workdir / f"{node.name}.log"

    def urls(self, first: int = 0) -> str:
        """Every node's MQTT URL, comma-separated, starting with node ``first``."""
        order = self.nodes[first:] + self.nodes[:first]
        return ",".join(node.mqtt_url for node in order)

    def running(self, index: int) -> bool:
        """Whether node ``index`` is alive."""
        process = self._processes.get(self.nodes[index].name)
        return process is not None and process.poll() is None

    def pid(self, index: int) -> int | None:
        """Process id of node ``index`` while it runs (for memory figures)."""
        process = self._processes.get(self.nodes[index].name)
        return process.pid if process is not None and process.poll() is None else None

    def start(self, timeout: float = 60.0) -> None:
        """Start every node; wait until each is healthy with JetStream and takes MQTT."""
        for index in range(len(self.nodes)):
            self._spawn(index)
        for index in range(len(self.nodes)):
            self.wait_healthy(index, timeout)

    def start_node(self, index: int, timeout: float = 60.0) -> None:
        """Start node ``index`` again (same ports, same JetStream store)."""
        self._spawn(index)
        self.wait_healthy(index, timeout)

    def _spawn(self, index: int) -> None:
        node = self.nodes[index]
        if self.running(index):
            return
        log = self.log_path(node).open("ab")
        try:
            self._processes[node.name] = subprocess.Popen(
                [self.binary, "-c", str(self.config_path(node))],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()

    def wait_healthy(self, index: int, timeout: float = 60.0) -> None:
        """Wait until node ``index`` reports healthy (JetStream current) and MQTT listens."""
        node = self.nodes[index]
        url = f"http://127.0.0.1:{node.http_port}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self._processes.get(node.name)
            if process is None or process.poll() is not None:
                msg = f"nats-server {node.name} exited: {self.log_tail(node)}"
                raise AgentError(msg)
            if _healthy(url) and _listens(node.mqtt_port):
                return
            time.sleep(0.1)
        msg = f"nats-server {node.name} not healthy within {timeout} s: {self.log_tail(node)}"
        raise AgentError(msg)

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (a machine lost), reaping it."""
        process = self._processes.pop(self.nodes[index].name, None)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(30)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout``)."""
        for process in self._processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes.values():
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self._processes.clear()

    def log_tail(self, node: NatsNode, lines: int = 20) -> str:
        """The end of a node's log (for error messages)."""
        try:
            text = self.log_path(node).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _healthy(url: str) -> bool:
    if not url.startswith("http://127.0.0.1:"):  # loopback monitoring port only
        return False
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback http
            return bool(json.loads(response.read()).get("status") == "ok")
    except (OSError, ValueError):
        return False


def _listens(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False

"""``device-agent demo``: a real agent against an embedded broker, driven by a platform stand-in.

It starts the amqtt broker in-process, writes a configuration with one command handler (a real
executable, run as the daemon would run it), starts the agent, and then plays the Huawei IoTDA
platform: a ``createCommands`` subtask, a bad request, a ``createMessages`` subtask. It prints
each exchange and the journal's view at the end.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tempfile
import textwrap
from pathlib import Path

from agent.app.build import build_agent
from agent.app.daemon import read_secret
from agent.config import AgentConfig, MqttSettings, load_config
from agent.core.model import ConnectIdentity, Publish, Subscription
from agent.journal.sqlite import SqliteJournal
from agent.journal.status import read_status
from agent.profiles.huawei_iotda import HuaweiIotdaPlatform
from agent.sim.embedded_broker import start_embedded_broker
from agent.transport.base import CallbackLink, InboundMessage
from agent.transport.paho_bridge import MqttConnection

DEVICE = "demo-device-0001"
HANDLER = """\
#!{python}
import json, os, platform, sys
paras = json.load(sys.stdin)
print(json.dumps({{"result_code": 0, "response_name": "DEVICE_INFO",
                  "paras": {{"hostname": platform.node(), "pid": os.getpid(), "echo": paras}}}}))
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_demo_files(workdir: Path, port: int) -> Path:
    """Secret, handler and configuration for the demo device; returns the config path."""
    handlers = workdir / "handlers"
    handlers.mkdir(parents=True, exist_ok=True)
    handler = handlers / "device-info"
    handler.write_text(HANDLER.format(python=sys.executable))
    handler.chmod(0o755)
    secret = workdir / "secret"
    secret.touch(mode=0o600)
    secret.chmod(0o600)  # private before it holds anything: check-config refuses it otherwise
    secret.write_text("demo-secret-not-for-production\n")
    config = workdir / "agent.toml"
    config.write_text(
        textwrap.dedent(f"""\
        [device]
        profile = "huawei-iotda"
        device_id = "{DEVICE}"
        secret_file = "{workdir / "secret"}"

        [mqtt]
        host = "127.0.0.1"
        port = {port}
        backoff_max_s = 2

        [journal]
        path = "{workdir / "journal.db"}"

        [commands]
        allowed_dirs = ["{handlers}"]
        [[commands.routes]]
        service_id = "Maintenance"
        command_name = "DEVICE_INFO"
        handler = {{ argv = ["{handler}"], timeout_s = 10 }}

        [messages]
        spool_dir = "{workdir / "messages"}"
    """)
    )
    return config


class PlatformStandIn:
    """The cloud's side of one device connection: publishes downlinks, collects answers."""

    def __init__(self, config: AgentConfig) -> None:
        self.platform = HuaweiIotdaPlatform(DEVICE)
        self.answers: asyncio.Queue[InboundMessage] = asyncio.Queue()
        settings = MqttSettings(host=config.mqtt.host, port=config.mqtt.port, clean_session=True)
        link = CallbackLink(
            identity=lambda: ConnectIdentity(
                client_id="demo-platform", username=None, password=None
            ),
            subscriptions=lambda: [
                Subscription(topic_filter=f) for f in self.platform.uplink_filters()
            ],
            on_message=self._received,
        )
        self.connection = MqttConnection(settings, link=link)

    def _received(self, message: InboundMessage) -> None:
        self.connection.ack(message)
        self.answers.put_nowait(message)

    async def send(self, publish: Publish) -> InboundMessage | None:
        """Publish a downlink and wait for the device's answer (None if none comes)."""
        await self.connection.publish(publish.topic, publish.payload, publish.qos)
        try:
            return await asyncio.wait_for(self.answers.get(), 25)
        except TimeoutError:
            return None


def _show(title: str, publish: Publish, answer: InboundMessage | None) -> None:
    print(f"\n== {title}")
    print(
        f"   platform -> {publish.topic}\n              {publish.payload.decode(errors='replace')}"
    )
    if answer is None:
        print("   (no answer: messages are fire-and-forget)")
    else:
        payload = answer.payload.decode(errors="replace")
        print(f"   device   -> {answer.topic}\n              {payload}")


async def _spooled(spool: Path, timeout: float) -> list[Path]:
    """The spool's message descriptions, once there is one (messages have no answer to await)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # Polled, as a spool consumer would: nothing announces a finished message.
    while not (found := await asyncio.to_thread(lambda: sorted(spool.glob("*.json")))):
        if loop.time() >= deadline:
            break
        await asyncio.sleep(0.02)
    return found


async def run_demo(workdir: Path | None) -> int:
    """Run the demo; returns the exit code."""
    base = workdir or Path(tempfile.mkdtemp(prefix="device-agent-demo-"))
    port = free_port()
    broker = await start_embedded_broker(port)
    config = load_config(write_demo_files(base, port))
    journal = await SqliteJournal.open(config.journal.path)
    agent = build_agent(config, journal=journal, secret=read_secret(base / "secret"))
    stand_in = PlatformStandIn(config)
    problems: list[str] = []
    platform_task = asyncio.create_task(stand_in.connection.run())
    try:
        await agent.start()
        await asyncio.wait_for(
            asyncio.gather(agent.transport.ready.wait(), stand_in.connection.ready.wait()), 20
        )
        print(f"embedded broker on 127.0.0.1:{port}; agent config {base / 'agent.toml'}")
        command = stand_in.platform.command(
            "demo-req-1", "DEVICE_INFO", {"verbose": True}, service_id="Maintenance"
        )
        answer = await stand_in.send(command)
        _show("createCommands subtask: run the DEVICE_INFO handler", command, answer)
        if _result_code(answer) != 0:
            problems.append("the DEVICE_INFO command was not answered with result_code 0")
        bad = Publish(topic=stand_in.platform.command("demo-req-2", "X").topic, payload=b"{oops")
        answer = await stand_in.send(bad)
        _show("a malformed request gets a failure answer, and the agent keeps serving", bad, answer)
        if _result_code(answer) in (None, 0):
            problems.append("the malformed request did not get a failure answer")
        message = stand_in.platform.message("firmware window opens at 02:00", message_id="msg-1")
        await stand_in.connection.publish(message.topic, message.payload, 1)
        _show("createMessages subtask: delivered to the spool directory", message, None)
        spooled = await _spooled(base / "messages", timeout=20)
        for meta in spooled:
            print(f"   spooled: {meta.name} {json.loads(meta.read_text())['message_id']}")
        if not spooled:
            problems.append("the message did not reach the spool directory")
    finally:
        await agent.stop(grace=5, flush_timeout=5)
        await stand_in.connection.close()
        platform_task.cancel()
        await journal.close()
        await broker.shutdown()
    open_rows, recent, outbox = read_status(config.journal.path)
    print(
        f"\njournal: {len(recent)} subtasks finished, {len(open_rows)} open, "
        f"{outbox.count} answers awaiting the broker"
    )
    for row in reversed(recent):
        print(f"   {row.kind:<9} {row.state:<10} {row.key}")
    print(
        f"\nfiles kept in {base}; inspect with: device-agent status --journal {config.journal.path}"
    )
    for problem in problems:
        print(f"demo failed: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _result_code(answer: InboundMessage | None) -> int | None:
    """The ``result_code`` of a command answer, or None when there is no readable one."""
    if answer is None:
        return None
    try:
        code = json.loads(answer.payload).get("result_code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None

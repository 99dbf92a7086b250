"""The emulator as strict as Tencent IoT Hub: signed CONNECTs on its broker, gateway operations."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from agent.config import MqttSettings
from agent.core.model import ConnectIdentity, Subscription
from agent.profiles.tencent_iothub import auth
from agent.profiles.tencent_iothub import gateway_platform as gp
from agent.runtime.logging import get_logger
from agent.sim.embedded_broker import start_embedded_broker
from agent.sim.emulator.broker_auth import ConnectCheck
from agent.sim.emulator.records import TERMINAL
from agent.sim.emulator.service import Emulator
from agent.sim.emulator.tencent_ota import TencentOtaReports
from agent.sim.mosquitto import free_port
from agent.transport.base import CallbackLink, InboundMessage
from agent.transport.paho_bridge import MqttConnection
from tests.support.sim import call, emulator, fleet, wait_for

PRODUCT = "QWERT12345"
SECRET = base64.b64encode(b"sixteen byte key").decode()
WRONG_SECRET = base64.b64encode(b"not the secret").decode()


@asynccontextmanager
async def _strict(tmp_path: Path) -> AsyncIterator[tuple[Emulator, int]]:
    """An emulator on its own embedded broker, which checks CONNECTs against its registry."""
    port = free_port()
    broker = await start_embedded_broker(port)
    try:
        async with emulator(tmp_path, broker_url=f"mqtt://127.0.0.1:{port}") as emu:
            broker.connect_check = ConnectCheck(emu.registry, emu.clock)
            yield emu, port
    finally:
        await broker.shutdown()


async def _register(emu: Emulator, *names: str) -> None:
    devices = [
        {"device_id": f"{PRODUCT}{n}", "platform": "tencent-iothub", "product_id": PRODUCT,
         "name": n, "secret": SECRET}
        for n in names
    ]  # fmt: skip
    products = [{"product_id": PRODUCT, "platform": "tencent-iothub"}]
    status, _ = await call(
        emu, "POST", "/sim/v1/fleet", json={"products": products, "devices": devices}
    )
    assert status == 201


def _field(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _length(size: int) -> list[int]:
    """MQTT's variable-length encoding of the remaining length."""
    out = []
    while True:
        size, digit = divmod(size, 128)
        out.append(digit | (0x80 if size else 0))
        if not size:
            return out


async def _connack(port: int, client: str, user: str, given: str) -> int:
    """Send one MQTT 3.1.1 CONNECT; the CONNACK's return code."""
    variable = _field("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30)
    body = variable + _field(client) + _field(user) + _field(given)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(bytes([0x10, *_length(len(body))]) + body)
        await writer.drain()
        connack = await asyncio.wait_for(reader.readexactly(4), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    assert connack[0] == 0x20
    return connack[3]


async def test_the_embedded_broker_checks_tencent_connect_signatures(tmp_path: Path) -> None:
    """A CONNECT signed with the device's secret is accepted; a wrong HMAC or device is not."""
    async with _strict(tmp_path) as (emu, port):
        await _register(emu, "lamp")
        user = auth.username(PRODUCT, "lamp", "abcde", int(time.time()) + 600)
        good = auth.password(SECRET, user)
        assert await _connack(port, f"{PRODUCT}lamp", user, good) == 0
        assert await _connack(port, f"{PRODUCT}lamp", user, "0" * 64 + ";hmacsha256") != 0
        expired = auth.username(PRODUCT, "lamp", "abcde", int(time.time()) - 1)
        assert await _connack(
            port, f"{PRODUCT}lamp", expired, auth.password(SECRET, expired)
        ) != 0  # fmt: skip
        ghost = auth.username(PRODUCT, "ghost", "abcde", int(time.time()) + 600)
        assert await _connack(port, f"{PRODUCT}ghost", ghost, auth.password(SECRET, ghost)) != 0
        # Clients that are not Tencent devices (the task service's link) are not judged here.
        assert await _connack(port, "someone-else", "u", "p") == 0


async def test_tencent_agents_pass_the_password_check(tmp_path: Path) -> None:
    """Real agents sign their CONNECT as the platform checks it: the fleet connects."""
    async with (
        _strict(tmp_path) as (emu, port),
        fleet(emu, port, tmp_path, count=2, handlers=[], profile="tencent-iothub",
              product_id=PRODUCT) as (runner, _),
    ):  # fmt: skip
        assert len(runner.agents) == 2


async def test_a_psk_from_create_device_signs_a_connect_the_broker_accepts(tmp_path: Path) -> None:
    """CreateDevice's base64 DevicePsk signs a CONNECT the broker accepts; a wrong one not."""
    headers = {"X-TC-Version": "2018-06-14", "Content-Type": "application/json"}
    async with _strict(tmp_path) as (emu, port):
        status, created = await call(
            emu, "POST", "/", json={"ProductName": "lamps"},
            headers={**headers, "X-TC-Action": "CreateProduct"},
        )  # fmt: skip
        assert status == 200
        product = created["Response"]["ProductId"]
        status, answer = await call(
            emu, "POST", "/", json={"ProductId": product, "DeviceName": "desk"},
            headers={**headers, "X-TC-Action": "CreateDevice"},
        )  # fmt: skip
        psk = answer["Response"]["DevicePsk"]
        assert len(base64.b64decode(psk, validate=True)) == 16
        user = auth.username(product, "desk", "abcde", int(time.time()) + 600)
        assert await _connack(port, f"{product}desk", user, auth.password(psk, user)) == 0
        assert await _connack(port, f"{product}desk", user, auth.password(SECRET, user)) != 0


# -- gateways and their sub-devices (拓扑关系管理.md, 代理子设备上下线.md) ----------------


class _Gateway:
    """A Tencent gateway's own MQTT connection (the agent's transport, signed as the SDKs do)."""

    def __init__(self, port: int, name: str, filters: list[str]) -> None:
        self.name = name
        self.received: list[tuple[str, Any]] = []
        user = auth.username(PRODUCT, name, "gwcon", int(time.time()) + 600)
        identity = ConnectIdentity(
            client_id=f"{PRODUCT}{name}", username=user, password=auth.password(SECRET, user)
        )
        link = CallbackLink(
            identity=lambda: identity,
            subscriptions=lambda: [Subscription(topic_filter=f) for f in filters],
            on_message=self._received,
        )
        self.connection = MqttConnection(
            MqttSettings(host="127.0.0.1", port=port, keepalive_s=30),
            link=link,
            log=get_logger(component="test-gateway"),
        )
        self._task: asyncio.Task[None] | None = None

    def _received(self, message: InboundMessage) -> None:
        try:
            body: Any = json.loads(message.payload)
        except ValueError:
            body = message.payload
        self.received.append((message.topic, body))
        self.connection.ack(message)

    async def __aenter__(self) -> _Gateway:
        self._task = asyncio.get_running_loop().create_task(self.connection.run())
        await asyncio.wait_for(self.connection.ready.wait(), 20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def operate(self, kind: str, devices: list[dict[str, Any]] | None = None) -> Any:
        """Publish one operation; the platform's answer of that type."""
        before = len(self._answers(kind))
        body: dict[str, Any] = {"type": kind}
        if devices is not None:
            body["payload"] = {"devices": devices}
        topic = f"$gateway/operation/{PRODUCT}/{self.name}"
        await self.connection.publish(topic, json.dumps(body).encode(), 1)
        await wait_for(
            lambda: asyncio.sleep(0, len(self._answers(kind)) > before), 10, f"the {kind} answer"
        )
        return self._answers(kind)[-1]

    def _answers(self, kind: str) -> list[Any]:
        result = f"$gateway/operation/result/{PRODUCT}/{self.name}"
        return [b for t, b in self.received if t == result and b.get("type") == kind]

    def on(self, topic: str) -> list[Any]:
        """Everything received on ``topic``."""
        return [b for t, b in self.received if t == topic]


def _child(name: str, *, secret: str = SECRET, **fields: Any) -> dict[str, Any]:
    """A bind entry signed as the SDKs sign it."""
    random, ts = 121213, int(time.time())
    entry = {
        "product_id": PRODUCT, "device_name": name, "random": random, "timestamp": ts,
        "signmethod": "hmacsha1", "authtype": "psk",
        "signature": gp.bind_signature(secret, PRODUCT, name, random, ts),
    }  # fmt: skip
    return {**entry, **fields}


def _results(answer: Any) -> dict[str, int]:
    return {d["device_name"]: d["result"] for d in answer["payload"]["devices"]}


async def _api3(emu: Emulator, action: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"X-TC-Version": "2018-06-14", "X-TC-Action": action}
    status, answer = await call(emu, "POST", "/", json=body, headers=headers)
    assert status == 200
    return dict(answer["Response"])


async def _task_ends(emu: Emulator, task_type: str, name: str, tasks: dict[str, Any]) -> Any:
    """Create a task for one device and wait for its only subtask to end."""
    body = {"TaskType": task_type, "ProductId": PRODUCT, "DeviceNameFilter": f"^{name}$",
            "ScheduleTimeInSeconds": 0, "Tasks": tasks}  # fmt: skip
    task_id = (await _api3(emu, "CreateTask", body))["TaskId"]
    [sub] = emu.engine.subtasks[task_id]
    await wait_for(lambda: asyncio.sleep(0, sub.state in TERMINAL), 20, f"{task_type} to end")
    return sub


async def test_gateway_operations_are_answered_as_documented(tmp_path: Path) -> None:
    """bind/unbind/online/offline/describe_sub_devices get their documented results."""
    async with _strict(tmp_path) as (emu, port):
        await _register(emu, "gw", "c1", "c2", "other-gw")
        result = [f"$gateway/operation/result/{PRODUCT}/gw"]
        async with _Gateway(port, "gw", result) as gw:
            bound = await gw.operate(
                "bind",
                [_child("c1"), _child("c2", secret=WRONG_SECRET), _child("ghost"),
                 _child("other-gw", signmethod="md5"), {"device_name": "nameless"}],
            )  # fmt: skip
            assert _results(bound) == {
                "c1": 0, "c2": 803, "ghost": 802, "other-gw": 804, "nameless": 801
            }  # fmt: skip
            listed = await gw.operate("describe_sub_devices")
            assert listed["payload"]["devices"] == [{"product_id": PRODUCT, "device_name": "c1"}]
            assert listed["result"] == 0
            online = await gw.operate("online", [{"product_id": PRODUCT, "device_name": n}
                                                 for n in ("c1", "c2")])  # fmt: skip
            assert _results(online) == {"c1": 0, "c2": -1}  # c2 is not bound to this gateway
            described = await _api3(
                emu, "DescribeDevice", {"ProductID": PRODUCT, "DeviceName": "c1"}
            )
            assert described["Online"] == 1
            assert emu.registry.by_name(PRODUCT, "c1").gateway_id == f"{PRODUCT}gw"  # type: ignore[union-attr]
            offline = await gw.operate("offline", [{"product_id": PRODUCT, "device_name": "c1"}])
            assert _results(offline) == {"c1": 0}
            described = await _api3(
                emu, "DescribeDevice", {"ProductID": PRODUCT, "DeviceName": "c1"}
            )
            assert described["Online"] == 0
            unbound = await gw.operate("unbind", [{"product_id": PRODUCT, "device_name": "c1"}])
            assert _results(unbound) == {"c1": 0}
            assert (await gw.operate("describe_sub_devices"))["payload"]["devices"] == []
            again = await gw.operate("unbind", [{"product_id": PRODUCT, "device_name": "c1"}])
            assert _results(again) == {"c1": -1}


async def test_messages_and_deltas_reach_a_child_only_while_it_is_online(tmp_path: Path) -> None:
    """An offline child's PublishMessage fails (DeviceOffline) and its delta waits for online."""
    async with _strict(tmp_path) as (emu, port):
        await _register(emu, "gw", "lamp")
        data, shadow = f"{PRODUCT}/lamp/data", f"$shadow/operation/result/{PRODUCT}/lamp"
        filters = [f"$gateway/operation/result/{PRODUCT}/gw", data, shadow]
        async with _Gateway(port, "gw", filters) as gw:
            assert _results(await gw.operate("bind", [_child("lamp")])) == {"lamp": 0}
            message = {"PublishMessageTask": {"Topic": "data", "Payload": "on"}}

            refused = await _task_ends(emu, "PublishMessage", "lamp", message)
            assert (refused.state, refused.error_code) == ("fail", "FailedOperation.DeviceOffline")

            lamp = [{"product_id": PRODUCT, "device_name": "lamp"}]
            assert _results(await gw.operate("online", lamp)) == {"lamp": 0}
            published = await _task_ends(emu, "PublishMessage", "lamp", message)
            assert published.state == "success"
            assert published.output == {"published": "broker accepted"}
            await wait_for(lambda: asyncio.sleep(0, gw.on(data) == [b"on"]), 10, "the message")

            assert _results(await gw.operate("offline", lamp)) == {"lamp": 0}
            body = {"TaskType": "UpdateShadow", "ProductId": PRODUCT,
                    "DeviceNameFilter": "^lamp$", "ScheduleTimeInSeconds": 0,
                    "Tasks": {"UpdateShadowTask": {"Desired": '{"power":"on"}'}}}  # fmt: skip
            task_id = (await _api3(emu, "CreateTask", body))["TaskId"]
            [sub] = emu.engine.subtasks[task_id]
            await wait_for(lambda: asyncio.sleep(0, sub.state == "processing"), 10, "dispatch")
            # A get sent now is answered on the same topic after any delta already pushed.
            get = json.dumps({"type": "get", "clientToken": "probe"}).encode()
            await gw.connection.publish(f"$shadow/operation/{PRODUCT}/lamp", get, 1)
            await wait_for(lambda: asyncio.sleep(0, bool(gw.on(shadow))), 10, "the get reply")
            [reply] = gw.on(shadow)  # no delta while the child is offline
            assert reply["type"] == "get"
            assert reply["payload"]["state"]["desired"] == {"power": "on"}  # written all the same
            await gw.operate("online", lamp)
            await wait_for(lambda: asyncio.sleep(0, len(gw.on(shadow)) > 1), 10, "the delta")
            delta = gw.on(shadow)[1]
            assert (delta["type"], delta["payload"]["state"]) == ("delta", {"power": "on"})


async def test_ota_reports_are_checked_and_versions_answered(tmp_path: Path) -> None:
    """report_version gets report_version_rsp; a report breaking a rule is rejected by field."""
    async with _strict(tmp_path) as (emu, port):
        await _register(emu, "lamp")
        update = f"$ota/update/{PRODUCT}/lamp"
        async with _Gateway(port, "lamp", [update]) as lamp:
            report = f"$ota/report/{PRODUCT}/lamp"
            version = {"type": "report_version", "report": {"version": "1.0.0"}}
            await lamp.connection.publish(report, json.dumps(version).encode(), 1)
            await wait_for(lambda: asyncio.sleep(0, bool(lamp.on(update))), 10, "the answer")
            assert lamp.on(update) == [
                {"result_code": 0, "result_msg": "success", "type": "report_version_rsp",
                 "version": "1.0.0"}
            ]  # fmt: skip
            [reader] = [r for r in emu.table.readers if isinstance(r, TencentOtaReports)]
            assert emu.link is not None
            assert emu.link.bad_uplinks == 0  # the version report was taken by one reader
            progress = {"state": "done", "result_code": 0, "result_msg": ""}  # a number: wrong
            bad = {"type": "report_progress", "report": {"progress": progress, "version": "2"}}
            await lamp.connection.publish(report, json.dumps(bad).encode(), 1)
            await wait_for(lambda: asyncio.sleep(0, bool(reader.rejected)), 10, "the rejection")
            assert reader.rejected == [
                (report, 'report.progress.result_code must be a string (e.g. "0")')
            ]
            assert emu.link.bad_uplinks == 1
            assert (PRODUCT, "lamp") not in reader.progress

"""The emulator as strict as Tencent IoT Hub: signed CONNECTs on its broker, gateway operations."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from agent.embedded_broker import start_embedded_broker
from agent.profiles.tencent_iothub import auth
from agent.sim.emulator.broker_auth import ConnectCheck
from agent.sim.emulator.service import Emulator
from agent.sim.mosquitto import free_port
from tests.support.sim import call, emulator, fleet

PRODUCT = "QWERT12345"
SECRET = base64.b64encode(b"sixteen byte key").decode()


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


async def test_create_device_issues_a_base64_psk_that_signs_a_connect(tmp_path: Path) -> None:
    """CreateDevice's DevicePsk is base64 (16 bytes), and the broker accepts what it signs."""
    headers = {"X-TC-Version": "2018-06-14", "Content-Type": "application/json"}
    async with _strict(tmp_path) as (emu, port):
        product = {"ProductName": "lamps", "ProductId": PRODUCT}
        status, _ = await call(
            emu, "POST", "/", json=product, headers={**headers, "X-TC-Action": "CreateProduct"}
        )
        assert status == 200
        status, answer = await call(
            emu, "POST", "/", json={"ProductId": PRODUCT, "DeviceName": "desk"},
            headers={**headers, "X-TC-Action": "CreateDevice"},
        )  # fmt: skip
        psk = answer["Response"]["DevicePsk"]
        assert len(base64.b64decode(psk, validate=True)) == 16
        assert len(psk) == 24
        user = auth.username(PRODUCT, "desk", "abcde", int(time.time()) + 600)
        assert await _connack(port, f"{PRODUCT}desk", user, auth.password(psk, user)) == 0

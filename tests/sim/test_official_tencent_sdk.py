"""The official Tencent IoT Hub Python device SDK as a gateway against the strict emulator.

The SDK (PyPI ``tencent-iot-device``) pins paho-mqtt 1.5.1, which cannot share this project's
environment, so it runs in its own interpreter: set ``TENCENT_SDK_PYTHON`` to a Python that
has it (``pip install --no-deps tencent-iot-device paho-mqtt==1.5.1 pycryptodome``; its
declared pycrypto does not build, pycryptodome provides the same ``Crypto`` package). Without
it the test is skipped, saying so. The SDK signs its CONNECT with sdkappid 21010406 and a
millisecond "expiry", and its bind with HMAC-SHA1 of the sub-device secret string: the
emulator's embedded broker and gateway side must accept both, and answer every operation the
way the SDK reads it (it waits 1.5 s per answer and reads ``payload.devices``). Two things are
changed in the SDK at run time: the port (it always dials 1883) and the protocol level (it
speaks MQTT 3.1, "MQIsdp", which the embedded amqtt broker refuses; IoT Hub takes both).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path

import pytest

from agent.sim.embedded_broker import start_embedded_broker
from agent.sim.emulator.broker_auth import ConnectCheck
from agent.sim.mosquitto import free_port
from tests.support.sim import call, emulator

SDK_PYTHON = os.environ.get("TENCENT_SDK_PYTHON", "")
# The SDK connects to "{ProductId}{domain}": product "127" with domain ".0.0.1" is loopback.
PRODUCT, DOMAIN = "127", ".0.0.1"
SECRET = base64.b64encode(b"gateway secret 1").decode()
CHILD_SECRET = base64.b64encode(b"child secret 016").decode()

DRIVER = r"""
import json, sys, time
from hub.hub import QcloudHub

cfg = json.loads(sys.argv[1])
hub = QcloudHub(device_file=cfg["device_file"], tls=False, domain=cfg["domain"]).hub
# The SDK always dials 1883 for plain TCP; point it at the emulator's broker.
protocol = hub._QcloudHubProvider__protocol
protocol._AsyncConnClient__mqtt_tcp_port = cfg["port"]
# The SDK speaks MQTT 3.1 ("MQIsdp"), which amqtt refuses; the only change made to it.
protocol._AsyncConnClient__mqtt_client._protocol = 4
hub.connect()
deadline = time.time() + 20
while not hub.isMqttConnected():
    if time.time() > deadline:
        print(json.dumps({"connected": False}))
        sys.exit(1)
    time.sleep(0.1)
time.sleep(0.5)
results = {"connected": True}
results["init"] = hub.gatewayInit()[0]
time.sleep(0.5)  # the SDK's subscribe is asynchronous
pid, dn, secret = cfg["child"]
results["bind"] = hub.gatewaySubdevBind(pid, dn, secret)[0]
results["online"] = hub.gatewaySubdevOnline(pid, dn)[0]
rc, listed = hub.gatewaySubdevGetBindList(cfg["product"], cfg["gateway"])
results["describe"] = [rc, [[d.product_id, d.device_name] for d in listed]]
results["offline"] = hub.gatewaySubdevOffline(pid, dn)[0]
results["unbind"] = hub.gatewaySubdevUnbind(pid, dn)[0]
print(json.dumps(results))
hub.disconnect()
"""


@pytest.mark.skipif(not SDK_PYTHON, reason="TENCENT_SDK_PYTHON (an interpreter with the SDK) unset")
async def test_the_official_sdk_gateway_gets_every_operation_answered(tmp_path: Path) -> None:
    """Connect (signed), bind, online, describe, offline, unbind: rc 0 for each."""
    port = free_port()
    broker = await start_embedded_broker(port)
    try:
        async with emulator(tmp_path, broker_url=f"mqtt://127.0.0.1:{port}") as emu:
            broker.connect_check = ConnectCheck(emu.registry, emu.clock)
            devices = [
                {"device_id": f"{PRODUCT}{n}", "platform": "tencent-iothub",
                 "product_id": PRODUCT, "name": n, "secret": s}
                for n, s in (("gw", SECRET), ("child", CHILD_SECRET))
            ]  # fmt: skip
            products = [{"product_id": PRODUCT, "platform": "tencent-iothub"}]
            status, _ = await call(
                emu, "POST", "/sim/v1/fleet", json={"products": products, "devices": devices}
            )
            assert status == 201
            device_file = tmp_path / "device_info.json"
            device_file.write_text(json.dumps({
                "auth_mode": "KEY", "productId": PRODUCT, "productSecret": "", "deviceName": "gw",
                "key_deviceinfo": {"deviceSecret": SECRET},
                "cert_deviceinfo": {"devCaFile": "", "devCertFile": "", "devPrivateKeyFile": ""},
                "subDev": {"subdev_num": 1, "subdev_list": [
                    {"sub_productId": PRODUCT, "sub_devName": "child"}]},
                "region": "china",
            }))  # fmt: skip
            config = {
                "device_file": str(device_file), "domain": DOMAIN, "port": port,
                "product": PRODUCT, "gateway": "gw", "child": [PRODUCT, "child", CHILD_SECRET],
            }  # fmt: skip
            process = await asyncio.create_subprocess_exec(
                SDK_PYTHON, "-c", DRIVER, json.dumps(config),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
            )  # fmt: skip
            out, err = await asyncio.wait_for(process.communicate(), 90)
            assert process.returncode == 0, err.decode()[-2000:]
            results = json.loads(out.decode().strip().splitlines()[-1])
            assert results == {
                "connected": True, "init": 0, "bind": 0, "online": 0,
                "describe": [0, [[PRODUCT, "child"]]], "offline": 0, "unbind": 0,
            }  # fmt: skip
            assert sys.executable != SDK_PYTHON  # it really ran in the SDK's own interpreter
    finally:
        await broker.shutdown()

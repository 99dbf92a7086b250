"""Tencent messages and certificate mode, OceanConnect commands, script tasks against Mosquitto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.profiles.huawei_oceanconnect import OceanConnectPlatform
from agent.profiles.huawei_oceanconnect.platform import CommandAnswerV3
from agent.profiles.tencent_iothub import TencentIothubPlatform
from agent.sim.mosquitto import Mosquitto, free_port
from tests.support.agents import (
    RECORDING_HANDLER,
    REPO,
    AgentProcess,
    agent_config,
    write_handler,
)
from tests.support.dialects import (
    TENCENT_PRODUCT,
    oceanconnect_device,
    spooled,
    tencent_device,
)
from tests.support.platform import PlatformClient
from tests.support.tls import CertificateAuthority, tls_listener

pytestmark = pytest.mark.broker

WAIT = 30.0


def test_tencent_publish_messages_arrive_byte_identical_in_the_sink(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """PublishMessage payloads on control and data, JSON or not, are spooled byte for byte."""
    name = "tc-messages"
    config = agent_config(tmp_path, broker.port, device=tencent_device(tmp_path, name))
    agent = AgentProcess(config, tmp_path)
    platform_side = TencentIothubPlatform(TENCENT_PRODUCT, name)
    raw = b"\x00\xff close the valve \xfe\r\n"
    text = b'{"cmd": "close", "note": "json is fine too"}'
    with PlatformClient(
        broker.port, name, client_id="p-tc-msg", filters=platform_side.uplink_filters()
    ) as platform:
        agent.start()
        platform.send(platform_side.message("control", raw))
        platform.send(platform_side.message("data", text))
        platform.send(platform_side.message("event", b"publish-only topic, not subscribed"))
        platform.wait_for(lambda: len(spooled(tmp_path)) >= 2, WAIT, "two spooled messages")
    assert agent.stop() == 0

    received = {meta["topic"]: content for meta, content in spooled(tmp_path)}
    assert received == {
        f"{TENCENT_PRODUCT}/{name}/control": raw,
        f"{TENCENT_PRODUCT}/{name}/data": text,
    }
    assert all(meta["format"] == "raw" for meta, _ in spooled(tmp_path))


def test_tencent_certificate_device_connects_over_mutual_tls(tmp_path: Path) -> None:
    """Certificate mode: mutual TLS with the device certificate, no secret, and it serves."""
    name = "tc-cert"
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("server", "localhost", dns=("localhost",), ips=("127.0.0.1",))
    device_cert = ca.issue("device", f"{TENCENT_PRODUCT}{name}", client=True)
    tls_port = free_port()
    broker = Mosquitto(
        tmp_path / "mosquitto",
        extra_config=tls_listener(tls_port, ca.cert, server, require_certificate=True),
    )
    broker.start()
    try:
        device = tencent_device(tmp_path, name, auth="certificate")
        del device["secret_file"]
        tls = {
            "enabled": True,
            "ca_file": str(ca.cert),
            "cert_file": str(device_cert.cert),
            "key_file": str(device_cert.key),
        }
        config = agent_config(tmp_path, tls_port, device=device, mqtt={"tls": tls})
        agent = AgentProcess(config, tmp_path)
        platform_side = TencentIothubPlatform(TENCENT_PRODUCT, name)
        with PlatformClient(
            broker.port, name, client_id="p-tc-cert", filters=platform_side.uplink_filters()
        ) as platform:
            agent.start()
            platform.send(platform_side.message("control", b"over mutual TLS"))
            platform.wait_for(lambda: len(spooled(tmp_path)) == 1, WAIT, "the spooled message")
        assert agent.stop() == 0
    finally:
        broker.stop()

    connected = agent.events("mqtt.connected")
    assert connected
    assert connected[0]["client_id"] == f"{TENCENT_PRODUCT}{name}"
    assert spooled(tmp_path)[0][1] == b"over mutual TLS"


def test_oceanconnect_command_round_trip(tmp_path: Path, broker: Mosquitto) -> None:
    """A DeviceCmd cloudReq runs the command handler and is answered with deviceRsp."""
    device = "oc-dev-1"
    handler = write_handler(tmp_path / "handlers", "record", RECORDING_HANDLER)
    routes = [
        {
            "service_id": "Valve",
            "command_name": "LEVEL",
            "handler": {"argv": [str(handler)], "env": {"RECORD_FILE": str(tmp_path / "runs")}},
        }
    ]
    config = agent_config(
        tmp_path, broker.port, device=oceanconnect_device(tmp_path, device), routes=routes
    )
    agent = AgentProcess(config, tmp_path)
    side = OceanConnectPlatform(device)
    with PlatformClient(
        broker.port, device, client_id="p-oc", filters=side.uplink_filters()
    ) as platform:
        agent.start()
        platform.send(side.command(7, "LEVEL", {"value": 4}, service_id="Valve"))
        platform.send(side.command(8, "UNKNOWN", {}, service_id="Valve"))
        bad = {"msgType": "cloudReq", "mid": 9, "cmd": ["not", "a", "name"]}
        platform.client.publish(side.command_topic, json.dumps(bad).encode(), 1)

        def answers() -> dict[int, CommandAnswerV3]:
            decoded = (side.decode_uplink(t, p) for t, p in platform.uplinks)
            return {answer.mid: answer for answer in decoded}

        platform.wait_for(lambda: {7, 8, 9} <= set(answers()), WAIT, "three deviceRsp answers")
        got = answers()
    assert agent.stop() == 0

    assert got[7].errcode == 0
    assert got[7].body["echo"] == {"value": 4}
    assert got[8].errcode == 1
    assert got[8].body["error"] == "unknown_command"
    assert got[9].errcode == 1
    assert "cmd" in got[9].body["reason"]
    assert (tmp_path / "runs").read_text().split() == ["7"]  # the request id the handler saw


SCRIPT = """\
touch "$MARKER"
printf '{"paras": {"region": "%s", "note": "%s"}}' "$DEVICE_AGENT_TASK_EXT_region" \
  "$DEVICE_AGENT_TASK_EXT_note"
"""


def test_script_task_receives_task_ext_and_hostile_names_run_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A Shell script task gets TaskExt as variables; PATH or LD_PRELOAD refuse the task."""
    device = "dev-script"
    scripts = tmp_path / "handlers"
    scripts.mkdir()
    (scripts / "task.sh").write_text(SCRIPT)
    marker = tmp_path / "ran"
    routes = [
        {
            "command_name": "RUN_TASK",
            "handler": {
                "kind": "script",
                "task_type": 35,
                "script": str(scripts / "task.sh"),
                "env": {"MARKER": str(marker)},
            },
        }
    ]
    agent = AgentProcess(
        agent_config(tmp_path, broker.port, device_id=device, routes=routes), tmp_path
    )
    hostile = [{"Key": "LD_PRELOAD", "Value": "/tmp/evil.so"}, {"Key": "PATH", "Value": "/tmp"}]
    with PlatformClient(broker.port, device, client_id="p-script") as platform:
        agent.start()
        for index, pair in enumerate(hostile):
            platform.send(platform.side.command(f"h{index}", "RUN_TASK", {"TaskExt": [pair]}))
        platform.wait_for(
            lambda: {"h0", "h1"} <= set(platform.command_answers()), WAIT, "the refusals"
        )
        nothing_ran = not marker.exists()
        task_ext = [{"Key": "region", "Value": "eu-1"}, {"Key": "note", "Value": "$(id); `id`"}]
        platform.send(platform.side.command("ok", "RUN_TASK", {"TaskExt": task_ext}))
        platform.wait_for(lambda: "ok" in platform.command_answers(), WAIT, "the task's answer")
        answers = platform.command_answers()
    assert agent.stop() == 0

    assert nothing_ran
    for rid, name in (("h0", "LD_PRELOAD"), ("h1", "PATH")):
        answer = answers[rid][0]
        assert answer.result_code == 4
        assert name in answer.paras["reason"]
    assert answers["ok"][0].result_code == 0
    assert answers["ok"][0].paras == {"region": "eu-1", "note": "$(id); `id`"}
    assert len(agent.events("script.task_ext.refused")) == 2


def test_a_tencent_secret_that_is_not_base64_stops_the_daemon_with_a_clear_error(
    tmp_path: Path,
) -> None:
    """check-config and the daemon both refuse a secret that is not base64 (exit status 2)."""
    device = tencent_device(tmp_path, "tc-badsecret")
    Path(device["secret_file"]).write_text("this is not base64!\n")
    config = agent_config(tmp_path, free_port(), device=device)
    checked = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    agent = AgentProcess(config, tmp_path)
    agent.start(wait_ready=False)

    assert checked.returncode == 2
    assert "not a base64 device secret" in checked.stderr
    assert agent.wait_exit(30) == 2
    assert "base64" in agent.log_tail()

"""SIGHUP against a running daemon: the log level, command limits and the device secret."""

from __future__ import annotations

import re
import signal
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.core.model import ResultCode
from agent.profiles.huawei_iotda import auth
from agent.sim.mosquitto import Mosquitto
from tests.integration.test_credentials import DEVICE as AUTH_DEVICE
from tests.integration.test_credentials import PLATFORM_USER, AuthBroker
from tests.support import toml
from tests.support.agents import AgentProcess, agent_config, write_handler
from tests.support.platform import PlatformClient

pytestmark = pytest.mark.broker

DEVICE = "dev-reload-settings"
NEW_SECRET = "the-rotated-device-secret-9876"  # noqa: S105 - a test fixture
# Valid JSON of about 2 KiB: within the default output bound, over a bound of 1024 bytes.
BIG_ANSWER = 'print(\'{"paras": {"pad": "' + "x" * 2000 + "\"}}')\n"


def _answer(
    port: int,
    request_id: str,
    device: str = DEVICE,
    login: tuple[str | None, str | None] = (None, None),
) -> Any:
    user, password = login
    with PlatformClient(
        port, device, client_id=f"platform-{request_id}", username=user, password=password
    ) as platform:
        platform.send(platform.side.command(request_id, "BIG"))
        platform.wait_for(lambda: request_id in platform.command_answers(), 30, "the answer")
        return platform.command_answers()[request_id][0]


def _rewrite(agent: AgentProcess, change: dict[str, dict[str, Any]], reloads: int) -> None:
    """Change sections of the agent's file, SIGHUP, and wait for the ``reloads``-th reload."""
    data = tomllib.loads(agent.config.read_text())
    for section, values in change.items():
        data[section] = {**data[section], **values}
    agent.config.write_text(toml.dumps(data) + "\n")
    assert agent.process is not None
    agent.process.send_signal(signal.SIGHUP)
    agent.wait_event("agent.reloaded", 30, count=reloads)


def _reconnect(agent: AgentProcess, broker: Mosquitto, connects: int) -> None:
    """Restart the broker and wait until the agent has connected ``connects`` times."""
    broker.restart()
    agent.wait_event("mqtt.connected", 30, count=connects)


def _debug_lines(agent: AgentProcess) -> int:
    return sum(line.get("level") == "debug" for line in agent.log_lines())


def test_sighup_applies_the_log_level_and_the_output_bound(
    tmp_path: Path, own_broker: Mosquitto
) -> None:
    """Debug lines start and stop with the reloaded level; a smaller output bound cuts off."""
    handler = write_handler(tmp_path / "handlers", "big", BIG_ANSWER)
    routes = [{"command_name": "BIG", "handler": {"argv": [str(handler)]}}]
    config = agent_config(
        tmp_path, own_broker.port, device_id=DEVICE, routes=routes, logging={"level": "info"}
    )
    agent = AgentProcess(config, tmp_path)
    agent.start()
    assert _answer(own_broker.port, "roomy").result_code == ResultCode.SUCCESS
    assert _debug_lines(agent) == 0

    _rewrite(agent, {"logging": {"level": "debug"}, "commands": {"max_output_bytes": 1024}}, 1)
    cut = _answer(own_broker.port, "bounded")
    assert cut.result_code == ResultCode.BAD_HANDLER_OUTPUT, cut
    assert cut.paras["error"] == "output_too_large", cut
    _reconnect(agent, own_broker, 2)
    assert agent.events("mqtt.connect.started")  # a debug line, logged for each attempt
    debug_before = _debug_lines(agent)
    assert debug_before > 0

    _rewrite(agent, {"logging": {"level": "info"}}, 2)
    _reconnect(agent, own_broker, 3)
    assert _debug_lines(agent) == debug_before
    assert agent.stop() == 0


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[AuthBroker]:
    """A password-protected broker for one test."""
    broker = AuthBroker(tmp_path / "broker")
    broker.mosquitto.start()
    yield broker
    broker.mosquitto.stop(kill=True)


def test_sighup_reads_the_secret_file_again_for_the_next_connection(
    tmp_path: Path, auth_broker: AuthBroker
) -> None:
    """The broker takes only the new secret's password: the agent connects after the reload."""
    # The broker knows one device: the one its password file names.
    workdir = tmp_path / "agent"
    workdir.mkdir()
    port = auth_broker.mosquitto.port
    handler = write_handler(workdir / "handlers", "big", 'print("{}")\n')
    routes = [{"command_name": "BIG", "handler": {"argv": [str(handler)]}}]
    settings = {"auth_retry_s": 0.3, "backoff_initial_s": 0.05, "backoff_max_s": 0.1}
    config = agent_config(workdir, port, device_id=AUTH_DEVICE, routes=routes, mqtt=settings)
    agent = AgentProcess(config, workdir)
    agent.start(wait_ready=False)

    # The password the new secret signs for the agent's stamp (the hour in its client id).
    agent.wait_event("mqtt.connect.refused", 30)
    client_id = str(agent.events("mqtt.connect.started")[-1]["client_id"])
    match = re.fullmatch(rf"{re.escape(AUTH_DEVICE)}_0_0_(\d{{10}})", client_id)
    assert match, client_id
    auth_broker.set_device_password(auth.password(NEW_SECRET, match[1]))
    auth_broker.mosquitto.restart()
    # Still the old secret: refused again after the broker has read its new password file.
    refused = len(agent.events("mqtt.connect.refused"))
    agent.wait_event("mqtt.connect.refused", 30, count=refused + 2)
    assert not agent.events("mqtt.connected")

    (workdir / "secret").write_text(NEW_SECRET + "\n")
    assert agent.process is not None
    agent.process.send_signal(signal.SIGHUP)
    (reloaded,) = agent.wait_event("agent.reloaded", 30)
    assert "device.secret_file" in reloaded["applied"]
    agent.wait_notification("STATUS=connected", 30)
    assert _answer(port, "rotated", AUTH_DEVICE, PLATFORM_USER).result_code == 0
    assert agent.stop() == 0
    assert NEW_SECRET.encode() not in agent.log_path.read_bytes()

"""Credentials against a real Mosquitto: refusals retried slowly, secrets kept out of logs."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from agent.profiles.huawei_iotda import auth
from agent.sim.mosquitto import Mosquitto, free_port
from tests.support.agents import (
    DEVICE_SECRET,
    RECORDING_HANDLER,
    REPO,
    AgentProcess,
    agent_config,
    write_handler,
)
from tests.support.passwords import password_auth, write_password_file
from tests.support.platform import PlatformClient
from tests.support.tls import CertificateAuthority, tls_listener

pytestmark = pytest.mark.broker

DEVICE = "dev-auth"
PLATFORM_USER = ("platform", "platform-password")
AUTH_RETRY_S = 1.0


class AuthBroker:
    """A Mosquitto that wants a password from every client (and a TLS listener, unused by some)."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.password_file = workdir / "passwd"
        self.set_device_password("not-the-signed-password")
        ca = CertificateAuthority(workdir / "pki")
        server = ca.issue("server", "localhost", dns=("localhost",), ips=("127.0.0.1",))
        self.tls_port = free_port()
        extra = "\n".join(
            [
                password_auth(self.password_file),
                tls_listener(self.tls_port, ca.cert, server, require_certificate=False),
            ]
        )
        self.mosquitto = Mosquitto(workdir / "mosquitto", extra_config=extra)

    def set_device_password(self, password: str) -> None:
        """Rewrite the password file (the broker reads it when it starts)."""
        write_password_file(
            self.password_file, {DEVICE: password, PLATFORM_USER[0]: PLATFORM_USER[1]}
        )

    def attempts(self) -> int:
        """Connections the broker refused as not authorised, according to its log."""
        return self.mosquitto.log_path.read_text().count("disconnected, not authorised")


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[AuthBroker]:
    """A password-protected broker for one test."""
    broker = AuthBroker(tmp_path / "broker")
    broker.mosquitto.start()
    yield broker
    broker.mosquitto.stop(kill=True)


def _write_config(workdir: Path, port: int, **mqtt: object) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    handler = write_handler(workdir / "handlers", "record", RECORDING_HANDLER)
    routes = [
        {
            "command_name": "RECORD",
            "handler": {"argv": [str(handler)], "env": {"RECORD_FILE": str(workdir / "runs")}},
        }
    ]
    settings = {
        "auth_retry_s": AUTH_RETRY_S,
        # Fast reconnects for every other failure: bad credentials must not use them.
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.1,
        **mqtt,
    }
    return agent_config(workdir, port, device_id=DEVICE, routes=routes, mqtt=settings)


def _agent(workdir: Path, port: int) -> AgentProcess:
    return AgentProcess(_write_config(workdir, port), workdir)


def _signed_password(agent: AgentProcess) -> str:
    """The password the agent presents, computed independently from its client id's stamp."""
    client_id = str(agent.wait_event("mqtt.connect.started", 30)[-1]["client_id"])
    match = re.fullmatch(rf"{re.escape(DEVICE)}_0_0_(\d{{10}})", client_id)
    assert match, client_id
    return auth.password(DEVICE_SECRET, match[1])


def _served(port: int, request_id: str) -> int:
    user, password = PLATFORM_USER
    with PlatformClient(
        port, DEVICE, client_id=f"platform-{request_id}", username=user, password=password
    ) as platform:
        platform.send(platform.side.command(request_id, "RECORD", {"n": 1}))
        platform.wait_for(lambda: request_id in platform.command_answers(), 30, "the answer")
        return platform.command_answers()[request_id][0].result_code


def test_bad_credentials_are_retried_slowly_and_served_once_fixed(
    tmp_path: Path, auth_broker: AuthBroker
) -> None:
    """A refused CONNACK is logged as bad credentials, retried at auth_retry_s, not hammered."""
    agent = _agent(tmp_path / "agent", auth_broker.mosquitto.port)
    agent.start(wait_ready=False)
    refusals = agent.wait_event("mqtt.connect.refused", 30, count=3)
    attempts = [
        datetime.fromisoformat(line["timestamp"]) for line in agent.events("mqtt.connect.started")
    ]
    broker_attempts = auth_broker.attempts()

    for line in refusals:
        assert line["bad_credentials"] is True, line
        assert 0.8 * AUTH_RETRY_S <= line["retry_in_s"] <= AUTH_RETRY_S, line
        assert line["level"] == "error", line
    # Every attempt the broker saw is one the agent logged: there were no others in between,
    # and the next one waits for auth_retry_s, not for the (much shorter) reconnect backoff.
    assert len(refusals) <= broker_attempts <= len(refusals) + 1
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(attempts)]
    assert gaps, attempts
    assert min(gaps[: len(refusals) - 1]) >= 0.75 * AUTH_RETRY_S, gaps
    # Ready all the same (an offline device is not a failed start), and saying why it waits.
    notes = agent.collect_notifications()
    assert any("READY=1" in n for n in notes)
    assert any("STATUS=auth refused" in n for n in notes), notes
    assert not any("STATUS=connected" in n for n in notes)

    auth_broker.set_device_password(_signed_password(agent))
    auth_broker.mosquitto.restart()
    agent.wait_notification("STATUS=connected", 30)
    assert _served(auth_broker.mosquitto.port, "after-fix") == 0
    assert agent.stop() == 0
    assert (tmp_path / "agent" / "runs").read_text().split() == ["after-fix"]


def test_secrets_never_reach_logs_or_status_output(tmp_path: Path, auth_broker: AuthBroker) -> None:
    """Refused, connected, broker down, TLS refused: neither secret nor password is printed."""
    workdir = tmp_path / "agent"
    agent = _agent(workdir, auth_broker.mosquitto.port)
    # 1. Refused CONNACK (bad credentials).
    agent.start(wait_ready=False)
    agent.wait_event("mqtt.connect.refused", 30)
    password = _signed_password(agent)
    # 2. A successful run that serves a command.
    auth_broker.set_device_password(password)
    auth_broker.mosquitto.restart()
    agent.wait_notification("STATUS=connected", 30)
    assert _served(auth_broker.mosquitto.port, "secret-run") == 0
    # 3. The broker goes away: connection lost, connect failures.
    failed_before = len(agent.events("mqtt.connect.failed"))
    auth_broker.mosquitto.stop(kill=True)
    agent.wait_event("mqtt.connect.failed", 30, count=failed_before + 2)
    assert agent.stop() == 0
    # 4. TLS refused: the broker's certificate is from a CA the agent does not trust.
    stranger = CertificateAuthority(tmp_path / "stranger", "not the broker's CA")
    auth_broker.mosquitto.start()
    _write_config(
        workdir, auth_broker.tls_port, tls={"enabled": True, "ca_file": str(stranger.cert)}
    )
    failed_before_tls = len(agent.events("mqtt.connect.failed"))
    agent.start(wait_ready=False)
    # The TLS listener may come up a moment after the broker's first port: a refused TCP
    # connect can come first, so wait for the failure that names the certificate.
    deadline = time.monotonic() + 30
    while not any(
        "TLS certificate verification failed" in str(failure["error"])
        for failure in agent.events("mqtt.connect.failed")[failed_before_tls:]
    ):
        assert time.monotonic() < deadline, agent.events("mqtt.connect.failed")[failed_before_tls:]
        agent.wait_event("mqtt.connect.failed", 30, count=failed_before_tls + 1)
        time.sleep(0.1)
    assert agent.stop() == 0

    status = [
        subprocess.run(
            [sys.executable, "-m", "agent", "status", "--config", str(agent.config), *extra],
            capture_output=True,
            cwd=REPO,
            timeout=30,
            check=True,
        )
        for extra in ((), ("--json",))
    ]
    for result in status:
        assert "secret-run" in result.stdout.decode()  # the command is among recent results

    log = agent.log_path.read_bytes()
    for name, secret in (("device secret", DEVICE_SECRET), ("signed password", password)):
        assert secret.encode() not in log, f"the {name} is in the daemon's log"
        for result in status:
            assert secret.encode() not in result.stdout + result.stderr, f"{name} in status"
    # The phases really happened (a test that saw no failure would prove nothing).
    assert agent.events("mqtt.connect.refused")
    assert agent.events("mqtt.connected")
    assert agent.events("subtask.finished")

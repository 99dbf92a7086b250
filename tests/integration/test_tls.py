"""TLS and mutual TLS towards a real Mosquitto, with certificates made in the test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.sim.mosquitto import Mosquitto, free_port
from tests.support.agents import AgentProcess, agent_config, write_handler
from tests.support.platform import PlatformClient
from tests.support.tls import CertificateAuthority, Issued, tls_listener

pytestmark = pytest.mark.broker

DEVICE = "dev-tls"

ECHO_HANDLER = """\
import json, sys
print(json.dumps({"result_code": 0, "paras": {"echo": json.load(sys.stdin)}}))
"""


@dataclass(frozen=True)
class TlsBroker:
    """One Mosquitto with a plain listener (for the platform) and three TLS listeners."""

    broker: Mosquitto
    ca: CertificateAuthority
    client: Issued
    tls_port: int  # server certificate for localhost and 127.0.0.1
    mutual_port: int  # the same, and a client certificate is required
    wrong_name_port: int  # server certificate for another host name


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """A broker whose TLS listeners present certificates from a CA made for this module."""
    workdir = tmp_path_factory.mktemp("tls-broker")
    ca = CertificateAuthority(workdir / "pki")
    server = ca.issue("server", "localhost", dns=("localhost",), ips=("127.0.0.1",))
    elsewhere = ca.issue("elsewhere", "broker.example.invalid", dns=("broker.example.invalid",))
    client = ca.issue("client", DEVICE, client=True)
    ports = [free_port() for _ in range(3)]
    extra = "\n".join(
        [
            tls_listener(ports[0], ca.cert, server, require_certificate=False),
            tls_listener(ports[1], ca.cert, server, require_certificate=True),
            tls_listener(ports[2], ca.cert, elsewhere, require_certificate=False),
        ]
    )
    broker = Mosquitto(workdir / "mosquitto", extra_config=extra)
    broker.start()
    yield TlsBroker(broker, ca, client, *ports)
    broker.stop()


def _tls_agent(tmp_path: Path, port: int, *, host: str = "127.0.0.1", **tls: Any) -> AgentProcess:
    handler = write_handler(tmp_path / "handlers", "echo", ECHO_HANDLER)
    routes = [{"command_name": "ECHO", "handler": {"argv": [str(handler)]}}]
    tls_settings = {
        "enabled": True,
        **{k: str(v) if isinstance(v, Path) else v for k, v in tls.items()},
    }
    config = agent_config(
        tmp_path,
        port,
        device_id=DEVICE,
        routes=routes,
        mqtt={"host": host, "tls": tls_settings},
    )
    return AgentProcess(config, tmp_path)


def _served(agent: AgentProcess, env: TlsBroker, request_id: str) -> int:
    """Send one ECHO command through the plain listener; returns the answer's result code."""
    with PlatformClient(env.broker.port, DEVICE, client_id=f"platform-{request_id}") as platform:
        platform.send(platform.side.command(request_id, "ECHO", {"over": "tls"}))
        platform.wait_for(lambda: request_id in platform.command_answers(), 30, "the answer")
        answer = platform.command_answers()[request_id][0]
    assert answer.paras == {"echo": {"over": "tls"}}
    return answer.result_code


def _refused(agent: AgentProcess) -> str:
    """Start the agent, wait for two failed attempts, stop it; returns the logged error."""
    agent.start(wait_ready=False)
    failures = agent.wait_event("mqtt.connect.failed", 30, count=2)
    assert agent.stop() == 0
    assert not any("STATUS=connected" in n for n in agent.notifications)
    assert not agent.events("mqtt.connected")
    return str(failures[0]["error"])


def test_command_is_served_over_tls_with_the_certificate_checked(
    tmp_path: Path, tls_broker: TlsBroker
) -> None:
    """The agent verifies the broker's certificate (CA and address) and serves a command."""
    agent = _tls_agent(tmp_path, tls_broker.tls_port, ca_file=tls_broker.ca.cert)
    agent.start()
    assert _served(agent, tls_broker, "tls-1") == 0
    assert agent.stop() == 0


def test_command_is_served_over_mutual_tls(tmp_path: Path, tls_broker: TlsBroker) -> None:
    """With a client certificate the agent passes a broker that requires one, by host name."""
    agent = _tls_agent(
        tmp_path,
        tls_broker.mutual_port,
        host="localhost",
        ca_file=tls_broker.ca.cert,
        cert_file=tls_broker.client.cert,
        key_file=tls_broker.client.key,
    )
    agent.start()
    assert _served(agent, tls_broker, "mtls-1") == 0
    assert agent.stop() == 0


def test_missing_client_certificate_is_refused_with_a_clear_log_line(
    tmp_path: Path, tls_broker: TlsBroker
) -> None:
    """A broker that requires a client certificate refuses an agent without one; it says so."""
    agent = _tls_agent(tmp_path, tls_broker.mutual_port, ca_file=tls_broker.ca.cert)
    error = _refused(agent)
    assert "certificate" in error.lower(), error


def test_server_certificate_for_another_name_is_refused_by_default(
    tmp_path: Path, tls_broker: TlsBroker
) -> None:
    """Hostname verification is on unless disabled: a certificate for another name is refused."""
    agent = _tls_agent(tmp_path, tls_broker.wrong_name_port, ca_file=tls_broker.ca.cert)
    error = _refused(agent)
    assert "mismatch" in error.lower(), error
    assert "127.0.0.1" in error, error


def test_verify_hostname_false_accepts_a_certificate_for_another_name(
    tmp_path: Path, tls_broker: TlsBroker
) -> None:
    """``verify_hostname = false`` skips the name check (and only that): the command is served."""
    agent = _tls_agent(
        tmp_path, tls_broker.wrong_name_port, ca_file=tls_broker.ca.cert, verify_hostname=False
    )
    agent.start()
    assert _served(agent, tls_broker, "noverify-1") == 0
    assert agent.stop() == 0


def test_certificate_from_an_unknown_ca_is_refused(tmp_path: Path, tls_broker: TlsBroker) -> None:
    """A broker certificate that does not chain to the configured CA is refused."""
    stranger = CertificateAuthority(tmp_path / "other-ca", "some other CA")
    agent = _tls_agent(tmp_path, tls_broker.tls_port, ca_file=stranger.cert)
    error = _refused(agent)
    assert "issuer" in error.lower() or "verification failed" in error.lower(), error


def test_unknown_ca_is_refused_even_without_hostname_verification(
    tmp_path: Path, tls_broker: TlsBroker
) -> None:
    """Turning off the name check does not turn off the chain check."""
    stranger = CertificateAuthority(tmp_path / "other-ca", "some other CA")
    agent = _tls_agent(
        tmp_path, tls_broker.wrong_name_port, ca_file=stranger.cert, verify_hostname=False
    )
    error = _refused(agent)
    assert "issuer" in error.lower() or "verification failed" in error.lower(), error


def test_system_trust_store_does_not_trust_a_private_ca(
    tmp_path: Path, tls_broker: TlsBroker
) -> None:
    """Without ``ca_file`` the system store is used, which does not know the broker's CA."""
    agent = _tls_agent(tmp_path, tls_broker.tls_port)
    error = _refused(agent)
    assert "verification failed" in error.lower() or "issuer" in error.lower(), error

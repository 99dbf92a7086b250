"""Upgrades survive kill -9 at every state: the daemon as a process, Mosquitto, an HTTP server."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sim.mosquitto import Mosquitto
from agent.sim.packages import PackageServer
from tests.support.agents import AgentProcess, agent_config
from tests.support.platform import PlatformClient
from tests.support.upgrades import finals, reports, write_programs

pytestmark = pytest.mark.broker

DEVICE = "gw-ab"
OLD = os.urandom(1_500_000)
NEW = os.urandom(3_000_000)
OLD_SHA = hashlib.sha256(OLD).hexdigest()
NEW_SHA = hashlib.sha256(NEW).hexdigest()


@pytest.fixture
def packages() -> Iterator[PackageServer]:
    """A package server holding version 2.0."""
    with PackageServer() as server:
        server.add("/fw-2.0.bin", NEW)
        yield server


def _ab_agent(tmp_path: Path, port: int, *, health_timeout_s: float = 30.0) -> AgentProcess:
    handlers = tmp_path / "handlers"
    programs = write_programs(handlers, tmp_path)
    (tmp_path / "slot-a").write_bytes(OLD)
    (tmp_path / "slot-b").write_bytes(b"")
    (tmp_path / "boot_id").write_text(str(uuid.uuid4()))
    state = {
        "active": 0,
        "slots": [{"version": "1.0", "sha256": OLD_SHA}, {"version": None, "sha256": None}],
        "pending": None,
    }
    (tmp_path / "ab-state.json").write_text(json.dumps(state))
    ab_slots = {
        "slots": [str(tmp_path / "slot-a"), str(tmp_path / "slot-b")],
        "state_file": str(tmp_path / "ab-state.json"),
        "boot_id_file": str(tmp_path / "boot_id"),
        "confirm_timeout_s": health_timeout_s,
        "health_interval_s": 0.2,
        "reboot": {
            "argv": [programs["reboot"], str(tmp_path / "boot_id"), str(tmp_path / "reboots")]
        },
        "health": {"argv": [programs["health"], str(tmp_path / "health_exit")]},
    }
    config = agent_config(
        tmp_path,
        port,
        device_id=DEVICE,
        upgrades={
            "enabled": True,
            "state_dir": str(tmp_path / "upgrades"),
            "firmware_version": "1.0",
            "allow_http_hosts": ["127.0.0.1"],
            "report_interval_s": 0.0,
            "installer": "ab-slots",
            "ab_slots": ab_slots,
        },
    )
    return AgentProcess(config, tmp_path)


def _running_image(tmp_path: Path) -> str:
    state = json.loads((tmp_path / "ab-state.json").read_text())
    slot = ["slot-a", "slot-b"][state["active"]]
    return hashlib.sha256((tmp_path / slot).read_bytes()).hexdigest()


def _drive_to_result(agent: AgentProcess, platform: PlatformClient, timeout: float = 90.0) -> None:
    """Keep the agent running (restart it whenever it dies, as systemd would) until a result."""
    deadline = time.monotonic() + timeout
    while DEVICE not in finals(platform):
        if time.monotonic() > deadline:
            raise AssertionError(f"no final report; log:\n{agent.log_tail(60)}")
        assert agent.process is not None
        if agent.process.poll() is not None:
            # Not waiting for READY: resuming may reboot (kill) the agent before it connects.
            agent.start(wait_ready=False)
        platform.wait_for(
            lambda: DEVICE in finals(platform) or agent.process.poll() is not None,  # type: ignore[union-attr]
            max(0.1, deadline - time.monotonic()),
            "a final report or the agent's exit",
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    [
        "dispatcher.after_accept",
        "upgrade.checking",
        "upgrade.downloading",
        "upgrade.download.chunk=kill@8",
        "upgrade.verifying",
        "upgrade.installing",
        "upgrade.activating",
        "upgrade.rebooting",
        "upgrade.confirming",
        "upgrade.done",
    ],
)
def test_kill_at_any_state_ends_with_the_new_image_and_one_success(
    tmp_path: Path, broker: Mosquitto, packages: PackageServer, point: str
) -> None:
    """SIGKILL at each state: after restarts the upgrade succeeds; the slot is never partial."""
    agent = _ab_agent(tmp_path, broker.port)
    spec = point if "=" in point else f"{point}=kill"
    agent.env = {"DEVICE_AGENT_FAILPOINTS": spec}
    agent.start()
    with PlatformClient(
        broker.port, DEVICE, client_id=f"platform-{uuid.uuid4().hex[:8]}"
    ) as platform:
        platform.send(
            platform.side.upgrade(
                version="2.0",
                url=packages.url("/fw-2.0.bin"),
                sign=NEW_SHA,
                file_size=len(NEW),
                access_token="secret-token-for-the-package",  # noqa: S106 - a test token
            )
        )
        assert agent.wait_exit(60) == -signal.SIGKILL, agent.log_tail(40)
        assert _running_image(tmp_path) in (OLD_SHA, NEW_SHA)
        parts = list((tmp_path / "upgrades").rglob("*.part"))
        had = parts[0].stat().st_size if parts else 0
        requests_before = len(packages.served("/fw-2.0.bin"))
        agent.env = {}
        agent.start(wait_ready=False)
        _drive_to_result(agent, platform)
        if 0 < had < len(NEW):
            # The first request after the restart continues exactly where the file ends.
            resumed = packages.served("/fw-2.0.bin")[requests_before]
            assert resumed.range == f"bytes={had}-"
            assert resumed.status == 206
        all_reports = reports(platform)
    assert agent.stop() == 0

    final = finals(platform)[DEVICE]
    assert [(r.result_code, r.progress, r.version) for r in final] == [(0, 100, "2.0")]
    progress = [r.progress for r in all_reports]
    assert progress == sorted(progress), progress  # never an earlier phase after a later one
    assert _running_image(tmp_path) == NEW_SHA
    state = json.loads((tmp_path / "ab-state.json").read_text())
    assert state["active"] == 1
    assert state["pending"] is None
    assert "secret-token-for-the-package" not in agent.log_path.read_text()
    # Fetched from the start once only: a kill mid-download resumes rather than restarts.
    assert [r.range for r in packages.served("/fw-2.0.bin")].count(None) == 1


def test_a_new_version_that_never_turns_healthy_is_rolled_back(
    tmp_path: Path, broker: Mosquitto, packages: PackageServer
) -> None:
    """The health check fails until the confirm deadline: the old slot is back, reported."""
    agent = _ab_agent(tmp_path, broker.port, health_timeout_s=2.0)
    (tmp_path / "health_exit").write_text("1")
    agent.start()
    with PlatformClient(broker.port, DEVICE, client_id="platform-rollback") as platform:
        platform.send(
            platform.side.upgrade(
                version="2.0", url=packages.url("/fw-2.0.bin"), sign=NEW_SHA, file_size=len(NEW)
            )
        )
        _drive_to_result(agent, platform)
        # The rollback reboots into the old slot (the reboot program kills the agent).
        assert agent.wait_exit(30) == -signal.SIGKILL
        agent.start()
    assert agent.stop() == 0

    # The reboot may kill the agent before the broker's PUBACK of the result arrives; the
    # restarted agent then sends it again (at least once, the same answer every time).
    reported = finals(platform)[DEVICE]
    final = reported[0]
    assert set(reported) == {final}
    assert final.result_code == 10
    assert final.version == "1.0"
    assert "rolled back" in final.description
    assert _running_image(tmp_path) == OLD_SHA


def test_a_crash_right_after_the_failed_transition_reports_the_real_reason(
    tmp_path: Path, broker: Mosquitto, packages: PackageServer
) -> None:
    """SIGKILL just after `failed` is journaled: the next start reports code 7, not internal."""
    agent = _ab_agent(tmp_path, broker.port)
    agent.env = {"DEVICE_AGENT_FAILPOINTS": "upgrade.failed=kill"}
    agent.start()
    with PlatformClient(
        broker.port, DEVICE, client_id=f"platform-{uuid.uuid4().hex[:8]}"
    ) as platform:
        platform.send(
            platform.side.upgrade(
                version="2.0",
                url=packages.url("/fw-2.0.bin"),
                sign=OLD_SHA,  # not the package's digest: verification fails
                file_size=len(NEW),
            )
        )
        assert agent.wait_exit(60) == -signal.SIGKILL, agent.log_tail(40)
        assert DEVICE not in finals(platform)
        agent.env = {}
        _drive_to_result(agent, platform)
        (final,) = finals(platform)[DEVICE]
        assert final.result_code == 7, final
        assert "SHA-256 mismatch" in final.description, final
    assert _running_image(tmp_path) == OLD_SHA
    assert agent.stop() == 0

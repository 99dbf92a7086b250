"""The daemon's lifecycle against a real Mosquitto: SIGTERM, sd_notify, ``device-agent status``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.sim.mosquitto import Mosquitto
from tests.support.agents import (
    HANGING_HANDLER,
    REPO,
    AgentProcess,
    agent_config,
    wait_until,
    write_handler,
)
from tests.support.platform import PlatformClient

pytestmark = pytest.mark.broker

DEVICE = "dev-life"

# Runs until the test creates ``{request_id}.go`` in GATE_DIR (bounded: it gives up after 60 s).
GATED_HANDLER = """\
import json, os, sys, time
json.load(sys.stdin)
gate, rid = os.environ["GATE_DIR"], os.environ["DEVICE_AGENT_REQUEST_ID"]
with open(os.path.join(gate, "runs"), "a") as fh:
    fh.write(rid + "\\n")
open(os.path.join(gate, rid + ".started"), "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(os.path.join(gate, rid + ".go")):
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.01)
print(json.dumps({"result_code": 0, "response_name": "RELEASED", "paras": {"rid": rid}}))
"""


class Gates:
    """Start and release gated handler runs from the test."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory

    def started(self, request_id: str) -> bool:
        return (self.directory / f"{request_id}.started").exists()

    def wait_started(self, request_id: str) -> None:
        wait_until(lambda: self.started(request_id), 30, f"handler for {request_id} to start")

    def release(self, request_id: str) -> None:
        (self.directory / f"{request_id}.go").touch()

    def runs(self) -> list[str]:
        path = self.directory / "runs"
        return path.read_text().split() if path.exists() else []


def _agent(
    tmp_path: Path, port: int, *, grace: float = 5.0, env: dict[str, str] | None = None
) -> tuple[AgentProcess, Gates]:
    gates = Gates(tmp_path / "gates")
    gated = write_handler(tmp_path / "handlers", "gated", GATED_HANDLER)
    hanging = write_handler(tmp_path / "handlers", "hang", HANGING_HANDLER)
    routes = [
        {
            "command_name": "GATED",
            "handler": {
                "argv": [str(gated)],
                "timeout_s": 60,
                "env": {"GATE_DIR": str(gates.directory)},
            },
        },
        {
            "command_name": "HANG",
            "handler": {
                "argv": [str(hanging)],
                "timeout_s": 60,
                "env": {"PID_FILE": str(tmp_path / "hang.pids")},
            },
        },
    ]
    config = agent_config(
        tmp_path,
        port,
        device_id=DEVICE,
        routes=routes,
        lifecycle={"shutdown_grace_s": grace, "flush_timeout_s": 5.0},
    )
    return AgentProcess(config, tmp_path, env=env), gates


def _status(agent: AgentProcess, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "status", "--config", str(agent.config), *args],
        capture_output=True,
        cwd=REPO,
        timeout=30,
        check=True,
    )
    return result.stdout.decode()


def _status_json(agent: AgentProcess) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(_status(agent, "--json"))
    return value


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except OSError:
        return True


def test_sigterm_finishes_quick_work_interrupts_slow_work_and_answers_both(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """On SIGTERM a command done within the grace is answered 0, one that is not gets 6; exit 0."""
    agent, gates = _agent(tmp_path, broker.port, grace=2.0)
    agent.start()
    with PlatformClient(broker.port, DEVICE, client_id="platform-term") as platform:
        platform.send(platform.side.command("quick", "GATED"))
        platform.send(platform.side.command("slow", "HANG"))
        gates.wait_started("quick")
        wait_until((tmp_path / "hang.pids").exists, 30, "the hanging handler")
        assert agent.process is not None
        agent.process.send_signal(signal.SIGTERM)
        agent.wait_event("agent.stopping", 30)
        gates.release("quick")
        assert agent.stop(timeout=20) == 0
        # Both answers were at the broker before the daemon exited: nothing is left to send.
        assert _status_json(agent)["outbox"]["count"] == 0
        platform.wait_for(
            lambda: {"quick", "slow"} <= set(platform.command_answers()), 10, "both answers"
        )
        answers = platform.command_answers()

    assert answers["quick"][0].result_code == 0
    assert answers["quick"][0].paras == {"rid": "quick"}
    assert answers["slow"][0].result_code == 6
    assert answers["slow"][0].paras["error"] == "interrupted"
    stopped = agent.events("agent.stopped")
    assert stopped[0]["outbox_flushed"] is True
    handler_pid, child_pid = (int(p) for p in (tmp_path / "hang.pids").read_text().split())
    wait_until(
        lambda: _pid_gone(handler_pid) and _pid_gone(child_pid), 10, "the handler's group to go"
    )
    assert any("STOPPING=1" in n for n in agent.notifications)


def test_work_sent_after_sigterm_waits_at_the_broker_for_the_next_run(
    tmp_path: Path, own_broker: Mosquitto
) -> None:
    """Commands that arrive while the daemon stops are not taken; the next run does each once."""
    agent, gates = _agent(tmp_path, own_broker.port, grace=30.0)
    agent.start()
    later = [f"later-{i}" for i in range(3)]
    with PlatformClient(own_broker.port, DEVICE, client_id="platform-later") as platform:
        platform.send(platform.side.command("running", "GATED"))
        gates.wait_started("running")
        assert agent.process is not None
        agent.process.send_signal(signal.SIGTERM)
        agent.wait_event("agent.stopping", 30)
        for rid in later:
            platform.send(platform.side.command(rid, "GATED"))
        # The stopping daemon is still connected (it waits for "running"): it receives the new
        # commands and must leave them unacknowledged.
        agent.wait_event("message.deferred", 30, count=len(later))
        gates.release("running")
        assert agent.stop(timeout=30) == 0
        assert gates.runs() == ["running"]

        for rid in later:
            gates.release(rid)
        agent.start()
        platform.wait_for(lambda: set(later) <= set(platform.command_answers()), 30, "answers")
        answers = platform.command_answers()
        assert agent.stop() == 0

    assert sorted(gates.runs()) == sorted(["running", *later])
    assert all(answers[rid][0].result_code == 0 for rid in later)
    assert answers["running"][0].result_code == 0


def test_ready_comes_offline_and_status_follows_the_connection(
    tmp_path: Path, own_broker: Mosquitto
) -> None:
    """READY=1 with the broker down (STATUS=connecting); STATUS=connected once subscribed."""
    own_broker.stop()
    agent, gates = _agent(tmp_path, own_broker.port)
    agent.start(wait_ready=False)
    agent.wait_notification("READY=1", 30)
    ready = next(n for n in agent.notifications if "READY=1" in n)
    assert "STATUS=connecting" in ready
    agent.wait_event("mqtt.connect.failed", 30, count=2)
    assert not any("STATUS=connected" in n for n in agent.collect_notifications())

    own_broker.start()
    agent.wait_notification("STATUS=connected", 30)
    # STATUS=connected means subscribed: a command published right now is answered.
    with PlatformClient(own_broker.port, DEVICE, client_id="platform-ready") as platform:
        gates.release("first")
        platform.send(platform.side.command("first", "GATED"))
        platform.wait_for(lambda: "first" in platform.command_answers(), 30, "the answer")

    connecting = sum("STATUS=connecting" in n for n in agent.collect_notifications())
    own_broker.stop(kill=True)
    agent.wait_notification("STATUS=connecting", 30, count=connecting + 1)
    own_broker.start()
    agent.wait_notification("STATUS=connected", 30, count=2)
    assert agent.stop() == 0
    assert any("STOPPING=1" in n and "STATUS=stopping" in n for n in agent.notifications)
    # Without WATCHDOG_USEC the daemon sends no keep-alives.
    assert not any("WATCHDOG=1" in n for n in agent.notifications)


def test_watchdog_keepalives_arrive_when_systemd_asks_for_them(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """With WATCHDOG_USEC set the daemon sends WATCHDOG=1 at half that interval."""
    agent, _ = _agent(tmp_path, broker.port, env={"WATCHDOG_USEC": "200000"})
    agent.start()
    agent.wait_notification("WATCHDOG=1", 30, count=3)
    assert agent.stop() == 0


def test_status_shows_running_work_recent_results_and_the_outbox(
    tmp_path: Path, own_broker: Mosquitto
) -> None:
    """``device-agent status`` read while the daemon runs: in flight, results, queued answers."""
    agent, gates = _agent(tmp_path, own_broker.port)
    agent.start()
    with PlatformClient(own_broker.port, DEVICE, client_id="platform-status") as platform:
        gates.release("done-1")
        platform.send(platform.side.command("done-1", "GATED"))
        platform.wait_for(lambda: "done-1" in platform.command_answers(), 30, "first answer")
        platform.send(platform.side.command("busy-1", "GATED"))
        gates.wait_started("busy-1")

        text = _status(agent)
        status = _status_json(agent)
        assert [row["key"].rsplit("/", 1)[1] for row in status["in_flight"]] == ["busy-1"]
        assert status["in_flight"][0]["state"] == "running"
        assert status["in_flight"][0]["kind"] == "command"
        recent = {row["key"].rsplit("/", 1)[1]: row for row in status["recent"]}
        assert recent["done-1"]["state"] == "succeeded"
        assert recent["done-1"]["result"]["result_code"] == 0
        assert status["outbox"]["count"] == 0
        assert "in flight: 1" in text
        assert "commands/busy-1" in text
        assert "commands/done-1" in text
        assert "outbox: 0 awaiting the broker" in text

    # With the broker gone, the finished command's answer waits in the outbox.
    own_broker.stop(kill=True)
    agent.wait_event("mqtt.connection.lost", 30)
    gates.release("busy-1")
    wait_until(lambda: _status_json(agent)["outbox"]["count"] == 1, 30, "a queued answer")
    status = _status_json(agent)
    assert status["in_flight"] == []
    assert status["recent"][0]["key"].endswith("/busy-1")
    assert "outbox: 1 awaiting the broker" in _status(agent)
    assert agent.stop() == 0  # exits although the answer could not be delivered

    # The next run delivers it.
    own_broker.start()
    with PlatformClient(own_broker.port, DEVICE, client_id="platform-status") as platform:
        agent.start()
        platform.wait_for(lambda: "busy-1" in platform.command_answers(), 30, "queued answer")
        assert platform.command_answers()["busy-1"][0].result_code == 0
    assert agent.stop() == 0
    assert _status_json(agent)["outbox"]["count"] == 0

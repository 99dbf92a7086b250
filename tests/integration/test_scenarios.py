"""The foundation's required scenarios against a real Mosquitto and the daemon as a process."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from agent.sim.mosquitto import Mosquitto
from tests.support.agents import (
    HANGING_HANDLER,
    RECORDING_HANDLER,
    AgentProcess,
    agent_config,
    wait_until,
    write_handler,
)
from tests.support.platform import PlatformClient

pytestmark = pytest.mark.broker

DEVICE = "dev-1"


def _recording_agent(tmp_path: Path, port: int, **sections: dict[str, object]) -> AgentProcess:
    handler = write_handler(tmp_path / "handlers", "record", RECORDING_HANDLER)
    routes = [
        {
            "command_name": "RECORD",
            "handler": {
                "argv": [str(handler)],
                "env": {"RECORD_FILE": str(tmp_path / "executions")},
            },
        }
    ]
    config = agent_config(tmp_path, port, device_id=DEVICE, routes=routes, **sections)
    return AgentProcess(config, tmp_path)


def _executions(tmp_path: Path) -> list[str]:
    path = tmp_path / "executions"
    return path.read_text().split() if path.exists() else []


@pytest.mark.slow
def test_commands_survive_two_broker_restarts_executed_once_each(
    tmp_path: Path, own_broker: Mosquitto
) -> None:
    """200 commands sent across two broker restarts: each runs exactly once and is answered."""
    agent = _recording_agent(tmp_path, own_broker.port)
    agent.start()
    request_ids = [f"req-{i:03d}" for i in range(200)]
    with PlatformClient(own_broker.port, DEVICE) as platform:
        for index, rid in enumerate(request_ids):
            platform.send(platform.side.command(rid, "RECORD", {"n": index}))
            if index in (60, 130):
                own_broker.restart(kill=True)
        platform.wait_for(
            lambda: set(platform.command_answers()) >= set(request_ids),
            120,
            "an answer to every request",
        )
        answers = platform.command_answers()
    assert agent.stop() == 0

    executions = _executions(tmp_path)
    assert sorted(executions) == request_ids  # every request ran, and none twice
    assert all(a.result_code == 0 for rid in request_ids for a in answers[rid])


def test_results_journaled_before_a_kill_are_delivered_after_restart(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """SIGKILL after the result is journaled but before it is published: sent after restart."""
    agent = _recording_agent(tmp_path, broker.port)
    agent.env = {"DEVICE_AGENT_FAILPOINTS": "dispatcher.after_finish=kill"}
    agent.start()
    with PlatformClient(broker.port, DEVICE, client_id="platform-b") as platform:
        platform.send(platform.side.command("req-kill", "RECORD", {}))
        assert agent.wait_exit(30) == -signal.SIGKILL
        assert platform.command_answers() == {}  # died before publishing

        agent.env = {}
        agent.start()
        platform.wait_for(
            lambda: "req-kill" in platform.command_answers(), 30, "the journaled answer"
        )
        answer = platform.command_answers()["req-kill"][0]
    assert agent.stop() == 0

    assert answer.result_code == 0
    assert _executions(tmp_path) == ["req-kill"]


def test_redelivered_request_id_is_not_executed_twice(tmp_path: Path, broker: Mosquitto) -> None:
    """The same request id twice: one execution, and the stored answer sent for both."""
    agent = _recording_agent(tmp_path, broker.port)
    agent.start()
    with PlatformClient(broker.port, DEVICE, client_id="platform-c") as platform:
        request = platform.side.command("req-dup", "RECORD", {"x": 1})
        platform.send(request)
        platform.wait_for(lambda: "req-dup" in platform.command_answers(), 30, "first answer")
        platform.send(request)
        platform.wait_for(
            lambda: len(platform.command_answers()["req-dup"]) == 2, 30, "second answer"
        )
        answers = platform.command_answers()["req-dup"]
    assert agent.stop() == 0

    assert _executions(tmp_path) == ["req-dup"]
    assert answers[0] == answers[1]
    assert len(agent.events("subtask.duplicate")) == 1


BAD_COMMANDS = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (json.dumps({"command_name": 5}).encode(), "command_name"),
    (json.dumps({"command_name": "RECORD", "paras": "text"}).encode(), "paras"),
    (json.dumps({"paras": {}}).encode(), "command_name"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b"[" * 5000 + b"]" * 5000, "nested"),
    (b'{"command_name": "RECORD", "paras": {"v": NaN}}', "not valid JSON"),
    (json.dumps({"command_name": "RECORD", "paras": {"b": "x" * 70000}}).encode(), "exceeds"),
]


def test_malformed_requests_get_failure_answers_and_the_daemon_keeps_serving(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Every malformed command gets a bad-request answer and a log line; the next one works."""
    agent = _recording_agent(tmp_path, broker.port)
    agent.start()
    with PlatformClient(broker.port, DEVICE, client_id="platform-d") as platform:
        topic_prefix = f"$oc/devices/{DEVICE}/sys/"
        for index, (payload, _) in enumerate(BAD_COMMANDS):
            platform.client.publish(f"{topic_prefix}commands/request_id=bad-{index}", payload, 1)
        # Other subscribed topics get malformed input too; they have no answer channel.
        for suffix in (
            "events/down",
            "properties/get/request_id=g1",
            "shadow/get/response/request_id=s1",
            "properties/set/request_id=p1",
        ):
            platform.client.publish(topic_prefix + suffix, b"\x00garbage{", 1)
        platform.send(platform.side.command("good-after", "RECORD", {}))
        platform.wait_for(
            lambda: (
                {f"bad-{i}" for i in range(len(BAD_COMMANDS))} | {"good-after"}
                <= set(platform.command_answers())
            ),
            30,
            "answers to all commands",
        )
        answers = platform.command_answers()
        platform.wait_for(
            lambda: any(a.request_id == "p1" for a in platform.answers()),
            30,
            "the property-set answer",
        )
        property_set = next(a for a in platform.answers() if a.request_id == "p1")
    assert agent.stop() == 0

    for index, (_, reason) in enumerate(BAD_COMMANDS):
        answer = answers[f"bad-{index}"][0]
        assert answer.result_code == 4, answer
        assert reason in answer.paras["reason"], (reason, answer.paras)
    assert answers["good-after"][0].result_code == 0
    assert _executions(tmp_path) == ["good-after"]
    rejected = {
        line["topic"].removeprefix(topic_prefix): line["reason"]
        for line in agent.events("message.rejected")
    }
    assert {f"commands/request_id=bad-{i}" for i in range(len(BAD_COMMANDS))} < set(rejected)
    assert "not valid JSON" in rejected["events/down"]
    ignored = {line["topic"].removeprefix(topic_prefix) for line in agent.events("message.ignored")}
    assert {"properties/get/request_id=g1", "shadow/get/response/request_id=s1"} <= ignored
    assert property_set.result_code != 0


def test_hanging_handler_is_killed_with_its_process_group_at_the_deadline(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A handler that never returns is killed (children too) at its deadline; failure sent."""
    handler = write_handler(tmp_path / "handlers", "hang", HANGING_HANDLER)
    pid_file = tmp_path / "pids"
    routes = [
        {
            "command_name": "HANG",
            "handler": {
                "argv": [str(handler)],
                "timeout_s": 1.5,
                "env": {"PID_FILE": str(pid_file)},
            },
        }
    ]
    agent = AgentProcess(
        agent_config(tmp_path, broker.port, device_id=DEVICE, routes=routes), tmp_path
    )
    agent.start()
    with PlatformClient(broker.port, DEVICE, client_id="platform-e") as platform:
        started = time.monotonic()
        platform.send(platform.side.command("req-hang", "HANG", {}))
        platform.wait_for(lambda: "req-hang" in platform.command_answers(), 30, "timeout answer")
        elapsed = time.monotonic() - started
        answer = platform.command_answers()["req-hang"][0]
    assert agent.stop() == 0

    assert answer.result_code == 2
    assert answer.paras["error"] == "timeout"
    assert elapsed < 20  # answered before the platform's own 20 s timeout
    handler_pid, child_pid = (int(p) for p in pid_file.read_text().split())
    wait_until(
        lambda: not _alive(handler_pid) and not _alive(child_pid),
        10,
        "the handler and its child to be gone",
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False

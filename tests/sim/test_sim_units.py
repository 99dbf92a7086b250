"""Pieces of the simulator on their own: name filters, signatures, status, layout, scenarios."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.errors import ConfigError, RemoteProtocolError
from agent.sim.cli import DEMO_SCENARIO
from agent.sim.emulator import records as r
from agent.sim.emulator.auth import sign_headers, verify
from agent.sim.emulator.dispatch_huawei import HuaweiReader
from agent.sim.emulator.namefilter import NameFilter
from agent.sim.errors import RequestInvalid
from agent.sim.fleet.layout import build_layout, parse_shard, shard
from agent.sim.fleet.runner import Executions
from agent.sim.fleet.spec import CohortSpec, FleetSpec, load_scenario
from tests.support.agents import REPO


def test_name_filter_searches_like_the_platform() -> None:
    """An expression matches anywhere in the name unless anchored; empty matches everything."""
    names = [("frontdoor", "1"), ("doorbell", "2"), ("window", "3")]
    assert NameFilter("door").select(names) == ["1", "2"]
    assert NameFilter("^door").select(names) == ["2"]
    assert NameFilter("").select(names) == ["1", "2", "3"]


def test_nested_quantifiers_do_not_backtrack() -> None:
    """``(a+)+$`` against a long near-miss answers (RE2 never backtracks)."""
    assert not NameFilter("(a+)+$").matches("a" * 100_000 + "b")
    assert NameFilter("(a+)+$").matches("ba")


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)a", r"(?<!x)y", "(", "a" * 513, "a\x00"])
def test_unsupported_or_hostile_patterns_are_refused(pattern: str) -> None:
    """Backreferences, lookaround, syntax errors, oversize or NUL patterns are refused clearly."""
    with pytest.raises(RequestInvalid) as caught:
        NameFilter(pattern)
    assert caught.value.field == "DeviceNameFilter"
    assert caught.value.problem == "value"


def test_tc3_signature_verifies_and_detects_tampering() -> None:
    """A signed request verifies; a changed body, key, id or an old timestamp does not."""
    body = b'{"TaskType":"UpdateShadow"}'
    now = int(time.time())

    def signed(timestamp: int = now) -> dict[str, str]:
        return sign_headers(
            secret_id="AKID",  # noqa: S106
            secret_key="key",  # noqa: S106
            service="iotcloud",
            action="CreateTask",
            version="2018-06-14",
            host="127.0.0.1:1",
            body=body,
            timestamp=timestamp,
        )

    def check(headers: dict[str, str], *, payload: bytes = body, key: str = "key") -> str | None:
        return verify(
            secret_id="AKID",  # noqa: S106
            secret_key=key,
            method="POST",
            path="/",
            query="",
            headers=headers,
            body=payload,
            now=now,
        )

    assert check(signed()) is None
    assert check(signed(), payload=body + b" ") == "AuthFailure.SignatureFailure"
    assert check(signed(), key="other") == "AuthFailure.SignatureFailure"
    assert check(signed(now - 3600)) == "AuthFailure.SignatureExpire"
    other_id = {**signed(), "Authorization": signed()["Authorization"].replace("AKID", "AKIX")}
    assert check(other_id) == "AuthFailure.SecretIdNotFound"
    assert check({}) == "AuthFailure.SignatureFailure"


def _task(**counts: int) -> r.Task:
    task = r.Task("t", r.HUAWEI_IOTDA, "createCommands", "n", "a", 0.0, 0.0, {})
    task.counts.update(counts)
    return task


@pytest.mark.parametrize(
    ("counts", "stop", "status"),
    [
        ({"success": 3}, False, r.TASK_SUCCESS),
        ({"success": 2, "fail": 1}, False, r.TASK_PARTIAL),
        ({"fail": 3}, False, r.TASK_FAIL),
        ({}, False, r.TASK_FAIL),
        ({"success": 1, "processing": 1}, False, r.TASK_PROCESSING),
        ({"fail_wait_retry": 1}, False, r.TASK_PROCESSING),
        ({"processing": 1, "stopped": 2}, True, r.TASK_STOPPING),
        ({"success": 1, "stopped": 2}, True, r.TASK_STOPPED),
    ],
)
def test_task_status_follows_from_subtask_counts(
    counts: dict[str, int], stop: bool, status: str
) -> None:
    """Success, PartialSuccess, Fail, Processing, Stopping and Stopped derive from the counts."""
    task = _task(**counts)
    task.stop_requested = stop
    assert task.status(now=1.0) == status
    assert sum(v for k, v in task.progress().items() if k != "total") == task.total


def test_a_task_scheduled_later_is_waiting() -> None:
    """Before its schedule time, a task whose subtasks all wait is Waitting."""
    task = _task(waitting=2)
    task.schedule_at = 100.0
    assert task.status(now=50.0) == r.TASK_WAITTING
    assert task.status(now=150.0) == r.TASK_PROCESSING


@given(topic=st.sampled_from(["commands", "properties/set"]), payload=st.binary(max_size=300))
def test_arbitrary_uplink_bytes_raise_only_remote_protocol_errors(
    topic: str, payload: bytes
) -> None:
    """Whatever a device sends on an answer topic, the reader decodes it or refuses it cleanly."""
    reader = HuaweiReader()
    full = f"$oc/devices/dev-1/sys/{topic}/response/request_id=abc"
    with contextlib.suppress(RemoteProtocolError):
        reader.read(full, payload)


def test_shards_partition_the_connections_and_keep_children_with_gateways() -> None:
    """Shards are disjoint, cover the fleet, and a gateway's children go where it goes."""
    spec = FleetSpec(
        cohorts=[CohortSpec(name="m", count=7), CohortSpec(name="g", count=3, children=2)]
    )
    slots = build_layout(spec)
    parts = [shard(slots, i, 3) for i in range(3)]
    ids = [s.device.device_id for part in parts for s in part]
    assert sorted(ids) == sorted(s.device.device_id for s in slots)
    assert len(ids) == len(set(ids)) == 10
    for part in parts:
        for slot in part:
            assert all(child.gateway_id == slot.device.device_id for child in slot.children)
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "1", "a/b"):
        with pytest.raises(ValueError, match=r"shard|invalid literal"):
            parse_shard(bad)


@pytest.mark.parametrize(
    "path",
    [DEMO_SCENARIO, *sorted((REPO / "config" / "scenarios").glob("*.toml"))],
    ids=lambda p: Path(p).name,
)
def test_bundled_scenarios_load(path: Path) -> None:
    """Every scenario shipped with the project is valid."""
    scenario = load_scenario(path)
    assert scenario.tasks


def test_emulator_credentials_come_from_flag_file_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--huawei-sk, --huawei-sk-file, DEVICE_AGENT_EMULATOR_HUAWEI_SK: in that order."""
    import argparse

    from agent.sim.cli import add_commands, credential

    def build_parser() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser()
        add_commands(parser.add_subparsers())
        return parser

    secret_file = tmp_path / "sk"
    secret_file.write_text("from-file\n")
    base = ["emulator", "--broker", "mqtt://127.0.0.1:1883", "--data-dir", str(tmp_path)]
    parser = build_parser()
    monkeypatch.setenv("DEVICE_AGENT_EMULATOR_HUAWEI_SK", "from-env")
    assert credential(parser.parse_args(base), "huawei-sk") == "from-env"
    with_file = parser.parse_args([*base, "--huawei-sk-file", str(secret_file)])
    assert credential(with_file, "huawei-sk") == "from-file"
    with_flag = parser.parse_args([*base, "--huawei-sk", "flag", "--huawei-sk-file", "x"])
    assert credential(with_flag, "huawei-sk") == "flag"
    monkeypatch.delenv("DEVICE_AGENT_EMULATOR_HUAWEI_SK")
    assert credential(parser.parse_args(base), "huawei-sk") is None
    missing = parser.parse_args([*base, "--huawei-sk-file", str(tmp_path / "none")])
    with pytest.raises(ConfigError, match="--huawei-sk-file"):
        credential(missing, "huawei-sk")


def test_executions_count_a_retry_after_failure_as_an_attempt_not_a_repeat() -> None:
    """The same key run again after it failed is a new attempt; run twice otherwise, a repeat."""
    executions = Executions()
    executions.counts["retried"] += 1
    executions.failed("retried")
    executions.counts["retried"] += 1
    executions.counts["twice"] += 2

    assert executions.total == 4
    assert executions.repeated() == ["twice"]

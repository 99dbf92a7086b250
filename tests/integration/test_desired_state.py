"""Desired state against a real Mosquitto: Huawei property sets and shadows, Tencent shadows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.core.model import Publish
from agent.profiles.huawei_iotda.platform import PropertiesSetAnswer
from agent.profiles.tencent_iothub.platform import ShadowRequest
from agent.sim.mosquitto import Mosquitto
from agent.sim.shadows import TencentShadow
from tests.support.agents import AgentProcess, agent_config
from tests.support.dialects import (
    TENCENT_PRODUCT,
    applier_runs,
    desired_section,
    state_file,
    tencent_device,
)
from tests.support.platform import PlatformClient
from tests.support.shadows import HuaweiShadowService, TencentShadowService

pytestmark = pytest.mark.broker

WAIT = 30.0


# -- Huawei IoTDA ----------------------------------------------------------------------------


def _huawei_agent(tmp_path: Path, port: int, device_id: str) -> AgentProcess:
    desired = desired_section(tmp_path, ("Valve",), state_file_sections=["Temperature"])
    config = agent_config(tmp_path, port, device_id=device_id, desired=desired)
    return AgentProcess(config, tmp_path)


def _set_answers(platform: PlatformClient) -> dict[str, PropertiesSetAnswer]:
    return {a.request_id: a for a in platform.answers() if isinstance(a, PropertiesSetAnswer)}


def test_huawei_property_set_is_applied_answered_and_reported(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A property set is applied per service, answered result_code 0, and reported."""
    device = "hw-desired-1"
    service = HuaweiShadowService(device)
    with PlatformClient(broker.port, device, client_id="p-hw-1", responder=service) as platform:
        agent = _huawei_agent(tmp_path, broker.port, device)
        agent.start()
        services: dict[str, dict[str, Any]] = {
            "Temperature": {"target": 21},
            "Valve": {"open": True},
        }
        platform.send(platform.side.properties_set("ps-1", services))
        platform.wait_for(lambda: "ps-1" in _set_answers(platform), WAIT, "the property-set answer")
        platform.wait_for(lambda: service.reported() == services, WAIT, "the property report")

        # One service cannot be applied: a failure answer naming it, the rest reported.
        partial: dict[str, dict[str, Any]] = {
            "Temperature": {"target": 22},
            "Valve": {"mode": "fail"},
        }
        platform.send(platform.side.properties_set("ps-2", partial))
        platform.wait_for(lambda: "ps-2" in _set_answers(platform), WAIT, "the partial answer")
        platform.wait_for(
            lambda: service.reported()["Temperature"] == {"target": 22}, WAIT, "the partial report"
        )

        # The same request id again: answered from the journal, not applied again.
        platform.send(platform.side.properties_set("ps-1", services))
        platform.wait_for(
            lambda: sum(a.request_id == "ps-1" for a in platform.answers()) == 2,
            WAIT,
            "a repeat answer",
        )
        answers = _set_answers(platform)
        reported = service.reported()
    assert agent.stop() == 0

    assert answers["ps-1"].result_code == 0
    assert answers["ps-2"].result_code == 1
    assert answers["ps-2"].result_desc is not None
    assert "partial" in answers["ps-2"].result_desc
    assert "Valve (the actuator is stuck)" in answers["ps-2"].result_desc
    assert reported["Valve"] == {"open": True}  # the failed value was never reported
    assert state_file(tmp_path) == {"Temperature": {"target": 22}}
    assert [run[0] for run in applier_runs(tmp_path)] == ["Valve", "Valve"]
    summaries = [
        line for line in agent.events("subtask.finished") if line.get("kind") == "desired_state"
    ]
    assert [line["status"] for line in summaries] == ["applied", "partial"]


def test_huawei_desired_state_set_while_offline_is_applied_after_reconnecting(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Desired values written while the agent was down are read and applied on connect."""
    device = "hw-desired-2"
    service = HuaweiShadowService(device)
    with PlatformClient(broker.port, device, client_id="p-hw-2", responder=service) as platform:
        agent = _huawei_agent(tmp_path, broker.port, device)
        agent.start()
        platform.wait_for(lambda: service.reads >= 1, WAIT, "the read after the first connect")
        assert agent.stop() == 0

        service.set_desired("Temperature", {"target": 25, "unit": "C"})
        service.set_desired("Valve", {"open": False})
        agent.start()
        platform.wait_for(lambda: service.reads >= 2, WAIT, "the read after reconnecting")
        platform.wait_for(
            lambda: (
                service.reported()
                == {"Temperature": {"target": 25, "unit": "C"}, "Valve": {"open": False}}
            ),
            WAIT,
            "the applied values to be reported",
        )
        pending = service.shadow.pending_desired()
    assert agent.stop() == 0

    assert pending == {}
    assert state_file(tmp_path) == {"Temperature": {"target": 25, "unit": "C"}}
    assert applier_runs(tmp_path) == [["Valve", {"open": False}]]


BAD_PROPERTY_SETS: list[tuple[Any, str]] = [
    ({"services": [{"service_id": "Temperature", "properties": "hot"}]}, "properties"),
    ({"services": [{"service_id": 7, "properties": {}}]}, "service_id"),
    (
        {"services": [{"service_id": f"S{i}", "properties": {"a": 1}} for i in range(6)]},
        "at most 5",
    ),
    ({"services": [{"service_id": "Temperature", "properties": {"b": "x" * 11000}}]}, "10240-byte"),
    (
        {"services": [{"service_id": "Gearbox", "properties": {"ratio": 3}}]},
        "no applier is configured",
    ),
    (
        {
            "services": [
                {
                    "service_id": "Temperature",
                    "properties": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}},
                }
            ]
        },
        "nested 7 levels deep",
    ),
    ("{not json", "not valid JSON"),
]


def test_huawei_bad_desired_documents_get_clear_failures_and_serving_goes_on(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Wrong types, too many services, oversize, unknown services, deep nesting: answered."""
    device = "hw-desired-3"
    service = HuaweiShadowService(device)
    with PlatformClient(broker.port, device, client_id="p-hw-3", responder=service) as platform:
        agent = _huawei_agent(tmp_path, broker.port, device)
        agent.start()
        topic = f"$oc/devices/{device}/sys/properties/set/request_id="
        for index, (body, _) in enumerate(BAD_PROPERTY_SETS):
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            platform.send(Publish(topic=f"{topic}bad-{index}", payload=data))
        platform.send(platform.side.properties_set("good", {"Temperature": {"target": 19}}))
        expected = {f"bad-{i}" for i in range(len(BAD_PROPERTY_SETS))} | {"good"}
        platform.wait_for(lambda: expected <= set(_set_answers(platform)), WAIT, "every answer")
        answers = _set_answers(platform)
    assert agent.stop() == 0

    for index, (_, reason) in enumerate(BAD_PROPERTY_SETS):
        answer = answers[f"bad-{index}"]
        assert answer.result_code == 1, answer
        assert reason in (answer.result_desc or ""), (reason, answer)
    assert answers["good"].result_code == 0
    assert state_file(tmp_path) == {"Temperature": {"target": 19}}
    assert len(agent.events("message.rejected")) >= 4  # the malformed ones were logged


# -- Tencent IoT Hub -------------------------------------------------------------------------


def _tencent(
    tmp_path: Path, port: int, device_name: str
) -> tuple[AgentProcess, TencentShadowService]:
    config = agent_config(
        tmp_path,
        port,
        device=tencent_device(tmp_path, device_name),
        desired=desired_section(tmp_path, ("light",)),
    )
    return AgentProcess(config, tmp_path), TencentShadowService(TENCENT_PRODUCT, device_name)


def _client(port: int, service: TencentShadowService, name: str) -> PlatformClient:
    return PlatformClient(
        port,
        name,
        client_id=f"p-{name}",
        filters=service.platform.uplink_filters(),
        responder=service,
    )


def _converged(service: TencentShadowService, expected: dict[str, Any]) -> bool:
    desired, reported, _ = service.snapshot()
    return desired is None and all(reported.get(k) == v for k, v in expected.items())


def test_tencent_delta_is_applied_reported_and_desired_cleared(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A delta is applied (handler and state file), reported, and desired set to null."""
    agent, service = _tencent(tmp_path, broker.port, "tc-delta")
    with _client(broker.port, service, "tc-delta") as platform:
        agent.start()
        platform.wait_for(lambda: service.count("get") >= 1, WAIT, "the read after connecting")
        delta = service.set_desired({"light": {"on": True, "level": 80}, "mode": "eco"})
        assert delta is not None
        platform.send(delta)
        platform.wait_for(
            lambda: _converged(service, {"light": {"on": True, "level": 80}, "mode": "eco"}),
            WAIT,
            "the shadow to converge",
        )
        _, reported, _ = service.snapshot()
    assert agent.stop() == 0

    assert reported["device_agent"]["result"] == "applied"
    assert state_file(tmp_path) == {"mode": "eco"}
    assert applier_runs(tmp_path) == [["light", {"on": True, "level": 80}]]


def test_tencent_desired_state_set_while_offline_is_applied_after_reconnecting(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Deltas are not stored: the read after reconnecting finds and applies the change."""
    agent, service = _tencent(tmp_path, broker.port, "tc-offline")
    with _client(broker.port, service, "tc-offline") as platform:
        agent.start()
        platform.wait_for(lambda: service.count("get") >= 1, WAIT, "the first read")
        assert agent.stop() == 0

        delta = service.set_desired({"mode": "night"})
        assert delta is not None
        platform.send(delta)  # QoS 0 to an offline device: lost, as on the platform
        agent.start()
        platform.wait_for(lambda: _converged(service, {"mode": "night"}), WAIT, "the catch-up")
        gets = service.count("get")
    assert agent.stop() == 0

    assert gets == 2
    assert state_file(tmp_path) == {"mode": "night"}


def test_tencent_version_conflict_resolves_in_one_reget(tmp_path: Path, broker: Mosquitto) -> None:
    """A 5005 refusal (desired changed meanwhile) gets one read; the newer state is applied."""
    agent, service = _tencent(tmp_path, broker.port, "tc-conflict")
    conflicts: list[int] = []

    def change_first_time(shadow: TencentShadow, request: ShadowRequest) -> None:
        if not conflicts:
            # The console changes desired while the device reports; its delta got lost.
            conflicts.append(shadow.version)
            shadow.set_desired({"mode": "turbo"}, now=0)

    service.before_update = change_first_time
    with _client(broker.port, service, "tc-conflict") as platform:
        agent.start()
        platform.wait_for(lambda: service.count("get") >= 1, WAIT, "the read after connecting")
        delta = service.set_desired({"mode": "eco"})
        assert delta is not None
        platform.send(delta)
        platform.wait_for(lambda: _converged(service, {"mode": "turbo"}), WAIT, "the newer state")
        gets, updates = service.count("get"), service.count("update")
    assert agent.stop() == 0

    assert conflicts  # the conflict happened
    assert gets == 2  # connect + exactly one re-read
    assert updates == 2
    assert state_file(tmp_path) == {"mode": "turbo"}
    assert agent.events("desired.conflict.unresolved") == []


def test_tencent_conflicts_that_keep_coming_never_loop(tmp_path: Path, broker: Mosquitto) -> None:
    """A platform that refuses every update gets one re-read, then the agent waits."""
    agent, service = _tencent(tmp_path, broker.port, "tc-loop")

    def always_change(shadow: TencentShadow, request: ShadowRequest) -> None:
        shadow.set_desired({"mode": f"m{shadow.version}"}, now=0)

    service.before_update = always_change
    with _client(broker.port, service, "tc-loop") as platform:
        agent.start()
        platform.wait_for(lambda: service.count("get") >= 1, WAIT, "the read after connecting")
        delta = service.set_desired({"mode": "eco"})
        assert delta is not None
        platform.send(delta)
        platform.wait_for(
            lambda: bool(agent.events("desired.conflict.unresolved")), WAIT, "the agent to give up"
        )
        gets, updates = service.count("get"), service.count("update")
    assert agent.stop() == 0

    assert (gets, updates) == (2, 2)


def test_tencent_bad_deltas_are_reported_as_refused_and_serving_goes_on(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Wrong types and deep nesting are refused in the shadow status; a good delta then works."""
    agent, service = _tencent(tmp_path, broker.port, "tc-bad")
    topic = service.shadow.result_topic
    with _client(broker.port, service, "tc-bad") as platform:
        agent.start()
        platform.wait_for(lambda: service.count("get") >= 1, WAIT, "the read after connecting")
        wrong = {"type": "delta", "payload": {"state": ["not", "an", "object"], "version": 41}}
        platform.send(Publish(topic=topic, payload=json.dumps(wrong).encode(), qos=0))
        platform.wait_for(lambda: service.count("update") >= 1, WAIT, "the refusal report")
        _, reported, _ = service.snapshot()
        refusal = reported["device_agent"]

        deep = service.set_desired({"light": {"a": {"b": {"c": {"d": {"e": 1}}}}}})
        assert deep is not None
        platform.send(deep)
        platform.wait_for(lambda: service.count("update") >= 2, WAIT, "the failure report")
        desired, reported, _ = service.snapshot()
        failure = reported["device_agent"]

        good = service.set_desired({"light": None, "mode": "eco"})
        assert good is not None
        platform.send(good)
        platform.wait_for(lambda: _converged(service, {"mode": "eco"}), WAIT, "the good delta")
    assert agent.stop() == 0

    assert refusal["result"] == "rejected"
    assert "state" in refusal["description"]
    assert failure["result"] == "failed"
    assert "nested 6 levels deep" in failure["failed"][0]["reason"]
    assert desired == {"light": {"a": {"b": {"c": {"d": {"e": 1}}}}}}  # not cleared: not applied
    assert state_file(tmp_path) == {"mode": "eco"}
    assert applier_runs(tmp_path) == []  # the too-deep value never reached the handler

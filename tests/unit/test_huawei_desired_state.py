"""Huawei IoTDA desired state: property set/get and shadow samples both ways, limits, bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.errors import RemoteProtocolError
from agent.core.model import (
    ChildPropertiesSet,
    DesiredState,
    DesiredStateQuery,
    DesiredStateResult,
    Ignored,
    RequestRejected,
    StateQuery,
    StateReport,
    UnsupportedRequest,
)
from agent.profiles.huawei_iotda import HuaweiIotdaPlatform, HuaweiIotdaProfile
from agent.profiles.huawei_iotda.platform import (
    PropertiesGetAnswer,
    PropertiesReport,
    PropertiesSetAnswer,
    ShadowGetRequest,
)
from agent.sim.shadows import HuaweiShadow

DEV = "dev-1"
SYS = f"$oc/devices/{DEV}/sys/"


def _profile(*, desired_state: bool = True) -> HuaweiIotdaProfile:
    return HuaweiIotdaProfile(DEV, desired_state=desired_state)


# Samples from IoTDA docs iot_06_v5_3008 (property set), 3012 and the Python SDK's
# sdk_unittest/shadow_test.py (shadow get), 3006 (report); see docs/platforms.md, Sources.
PROPERTIES_SET = {
    "object_device_id": DEV,
    "services": [
        {"service_id": "Temperature", "properties": {"value": 57, "value2": 60}},
        {"service_id": "Battery", "properties": {"level": 80, "level2": 90}},
    ],
}
SET_RESPONSE = {"result_code": 0, "result_desc": "success"}
SHADOW_RESPONSE = {
    "object_device_id": DEV,
    "shadow": [
        {
            "service_id": "WaterMeter",
            "desired": {"properties": {"temperature": "60"}, "event_time": "20151212T121212Z"},
            "reported": {"properties": {"temperature": "60"}, "event_time": "20151212T121212Z"},
            "version": 1,
        }
    ],
}
REPORT = {
    "services": [
        {
            "service_id": "WaterMeter",
            "properties": {"temperature": "60"},
            "event_time": "20151212T121212Z",
        }
    ]
}


def _set(payload: Any, rid: str = "r1") -> tuple[str, bytes]:
    return f"{SYS}properties/set/request_id={rid}", json.dumps(payload).encode()


class TestPropertySet:
    def test_reference_property_set_becomes_desired_state_per_service(self) -> None:
        """The doc's two-service property set: one section per service_id, answer awaited."""
        event = _profile().decode(*_set(PROPERTIES_SET))

        assert isinstance(event, DesiredState)
        assert event.source == "push"
        assert event.correlation == "r1"
        assert event.sections == {
            "Temperature": {"value": 57, "value2": 60},
            "Battery": {"level": 80, "level2": 90},
        }
        assert event.key == f"huawei-iotda/{DEV}/properties-set/r1"

    def test_platform_builds_the_reference_property_set(self) -> None:
        """The platform side produces the same document the device decodes."""
        services = {s["service_id"]: s["properties"] for s in PROPERTIES_SET["services"]}  # type: ignore[index]
        publish = HuaweiIotdaPlatform(DEV).properties_set("r1", services, object_device_id=DEV)

        assert (publish.topic, json.loads(publish.payload)) == (
            *_set(PROPERTIES_SET)[0:1],
            PROPERTIES_SET,
        )

    def test_without_appliers_property_sets_are_answered_unsupported(self) -> None:
        """With no applier configured the request is understood and refused as unsupported."""
        event = _profile(desired_state=False).decode(*_set(PROPERTIES_SET))

        assert isinstance(event, UnsupportedRequest)
        assert event.request_kind == "properties_set"

    def test_a_property_set_for_a_child_goes_to_the_child_adapter(self) -> None:
        """``object_device_id`` naming a child: routed to the gateway's child adapter."""
        body = {"object_device_id": "child-7", "services": [{"service_id": "T", "properties": {}}]}

        event = _profile().decode(f"{SYS}properties/set/request_id=r9", json.dumps(body).encode())

        assert isinstance(event, ChildPropertiesSet)
        assert (event.device_id, event.correlation) == ("child-7", "r9")
        assert event.services == body["services"]

    @pytest.mark.parametrize(
        ("payload", "reason"),
        [
            ({"services": "Temperature"}, "services"),
            ({"services": [{"service_id": 5, "properties": {}}]}, "service_id"),
            ({"services": [{"service_id": "T", "properties": [1]}]}, "properties"),
            ({"services": [{"service_id": "T"}]}, "properties"),
            ({"services": []}, "names no service"),
            ({"services": [{"service_id": "", "properties": {}}]}, "empty service_id"),
            (
                {"services": [{"service_id": "T", "properties": {}}] * 2},
                "service 'T' twice",
            ),
            (
                {"services": [{"service_id": f"S{i}", "properties": {}} for i in range(6)]},
                "6 services; at most 5",
            ),
            (
                {"services": [{"service_id": "T", "properties": {"blob": "x" * 10300}}]},
                "exceeds the 10240-byte limit",
            ),
            ([1, 2], "must be a JSON object"),
            ("{broken", "not valid JSON"),
        ],
    )
    def test_bad_property_sets_are_answered_with_a_failure_that_says_why(
        self, payload: Any, reason: str
    ) -> None:
        """Wrong types, too many services, oversize, children: a result_code 1 answer."""
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()

        with pytest.raises(RemoteProtocolError, match=reason) as caught:
            _profile().decode(f"{SYS}properties/set/request_id=r9", data)

        reply = caught.value.reply
        assert isinstance(reply, RequestRejected)
        assert reply.correlation == "r9"
        (publish,) = _profile().encode(reply)
        assert publish.topic == f"{SYS}properties/set/response/request_id=r9"
        assert json.loads(publish.payload)["result_code"] == 1
        assert reason in json.loads(publish.payload)["result_desc"]


class TestAnswersAndReports:
    def _result(self, **fields: Any) -> DesiredStateResult:
        base: dict[str, Any] = {
            "device_id": DEV,
            "report_id": "t",
            "correlation": "r1",
            "status": "applied",
            "description": "success",
        }
        return DesiredStateResult(**{**base, **fields})

    def test_success_answers_like_the_reference_and_reports_the_values(self) -> None:
        """A full application: the doc's set response, then a property report."""
        answer, report = _profile().encode(
            self._result(reported={"WaterMeter": {"temperature": "60"}})
        )

        assert answer.topic == f"{SYS}properties/set/response/request_id=r1"
        assert json.loads(answer.payload) == SET_RESPONSE
        assert report.topic == f"{SYS}properties/report"
        without_time = {
            "services": [
                {k: v for k, v in s.items() if k != "event_time"} for s in REPORT["services"]
            ]
        }
        assert json.loads(report.payload) == without_time

    def test_partial_application_is_a_failure_answer_naming_what_failed(self) -> None:
        """Partial is never success: result_code 1, the description says what was not applied."""
        result = self._result(
            status="partial",
            description="partial: applied A; not applied B (timeout)",
            reported={"A": {"x": 1}},
        )

        answer, report = _profile().encode(result)

        body = json.loads(answer.payload)
        assert body["result_code"] == 1
        assert "not applied B" in body["result_desc"]
        assert json.loads(report.payload)["services"][0]["service_id"] == "A"

    def test_sync_results_report_without_answering(self) -> None:
        """A shadow catch-up has no request to answer: only the report goes out."""
        (publish,) = _profile().encode(self._result(correlation=None, reported={"A": {"x": 1}}))

        assert publish.topic == f"{SYS}properties/report"
        assert _profile().encode(self._result(correlation=None)) == []

    def test_shadow_get_request_is_sent_for_the_device(self) -> None:
        """The catch-up read after a connect is a shadow get with our request id."""
        (publish,) = _profile().encode(DesiredStateQuery(device_id=DEV, correlation="g1"))

        assert publish.topic == f"{SYS}shadow/get/request_id=g1"
        assert json.loads(publish.payload) == {}
        assert HuaweiIotdaPlatform(DEV).decode_uplink(
            publish.topic, publish.payload
        ) == ShadowGetRequest(device_id=DEV, request_id="g1")

    def test_platform_reads_the_reference_report_and_set_response(self) -> None:
        """The platform side decodes the doc's report and set response."""
        platform = HuaweiIotdaPlatform(DEV)

        report = platform.decode_uplink(f"{SYS}properties/report", json.dumps(REPORT).encode())
        answer = platform.decode_uplink(
            f"{SYS}properties/set/response/request_id=r1", json.dumps(SET_RESPONSE).encode()
        )

        assert report == PropertiesReport(
            device_id=DEV, services={"WaterMeter": {"temperature": "60"}}
        )
        assert answer == PropertiesSetAnswer(
            device_id=DEV, request_id="r1", result_code=0, result_desc="success"
        )

    def test_property_query_is_answered_with_the_applied_state(self) -> None:
        """properties/get becomes a state query; the answer lists services and properties."""
        platform = HuaweiIotdaPlatform(DEV)
        query = platform.properties_get("q1", "Temperature")

        event = _profile().decode(query.topic, query.payload)
        assert event == StateQuery(
            key=f"huawei-iotda/{DEV}/properties-get/q1",
            device_id=DEV,
            correlation="q1",
            section="Temperature",
        )
        (publish,) = _profile().encode(
            StateReport(device_id=DEV, correlation="q1", sections={"Temperature": {"value": 57}})
        )
        assert platform.decode_uplink(publish.topic, publish.payload) == PropertiesGetAnswer(
            device_id=DEV, request_id="q1", services={"Temperature": {"value": 57}}
        )


class TestShadowRead:
    def _response(self, body: Any) -> Any:
        return _profile().decode(
            f"{SYS}shadow/get/response/request_id=g1", json.dumps(body).encode()
        )

    def test_reference_shadow_with_desired_equal_to_reported_needs_nothing(self) -> None:
        """The doc sample has desired == reported: nothing is pending."""
        assert isinstance(self._response(SHADOW_RESPONSE), Ignored)

    def test_desired_values_not_reported_become_a_sync(self) -> None:
        """Only the properties that differ from reported are applied; reported is the baseline."""
        body = json.loads(json.dumps(SHADOW_RESPONSE))
        body["shadow"][0]["desired"]["properties"] = {"temperature": "70", "unit": "C"}
        body["shadow"][0]["reported"]["properties"] = {"temperature": "60", "unit": "C"}
        body["shadow"].append(
            {"service_id": "Valve", "desired": {"properties": {"open": True}}, "version": 3}
        )

        event = self._response(body)

        assert isinstance(event, DesiredState)
        assert event.source == "sync"
        assert event.correlation is None
        assert event.sections == {"WaterMeter": {"temperature": "70"}, "Valve": {"open": True}}
        assert event.reported == {"WaterMeter": {"temperature": "60", "unit": "C"}, "Valve": {}}

    def test_emulated_shadow_answers_reads_with_both_halves(self) -> None:
        """The platform-side shadow answers a read with desired, reported and versions."""
        shadow = HuaweiShadow(DEV)
        shadow.set_desired("WaterMeter", {"temperature": "60"})
        shadow.report({"WaterMeter": {"temperature": "60"}})

        publish = shadow.response(ShadowGetRequest(device_id=DEV, request_id="g1"))

        body = json.loads(publish.payload)
        assert publish.topic == f"{SYS}shadow/get/response/request_id=g1"
        assert body["shadow"][0]["desired"] == {"properties": {"temperature": "60"}}
        assert body["shadow"][0]["reported"] == {"properties": {"temperature": "60"}}
        assert shadow.pending_desired() == {}

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            ({"shadow": {"service_id": "A"}}, "shadow"),
            ({"shadow": [{"service_id": "A", "desired": {"properties": [1]}}]}, "properties"),
            ({"shadow": [{"desired": {"properties": {"a": 1}}}]}, "service_id"),
            ({"object_device_id": "child", "shadow": []}, "child"),
        ],
    )
    def test_bad_shadow_responses_are_refused(self, body: Any, reason: str) -> None:
        """A malformed shadow response is refused with a reason (there is nothing to answer)."""
        with pytest.raises(RemoteProtocolError, match=reason) as caught:
            self._response(body)

        assert caught.value.reply is None

    def test_without_appliers_shadow_responses_and_queries_are_ignored(self) -> None:
        """Without appliers, reads and queries are logged as not served."""
        profile = _profile(desired_state=False)

        shadow = profile.decode(
            f"{SYS}shadow/get/response/request_id=g", json.dumps(SHADOW_RESPONSE).encode()
        )
        query = profile.decode(f"{SYS}properties/get/request_id=q", b"{}")

        assert isinstance(shadow, Ignored)
        assert isinstance(query, Ignored)


@settings(max_examples=300, deadline=None)
@given(
    suffix=st.sampled_from(
        [
            "properties/set/request_id=p1",
            "properties/get/request_id=q1",
            "shadow/get/response/request_id=s1",
        ]
    ),
    payload=st.one_of(
        st.binary(max_size=256),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=6),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=6), inner, max_size=3)
            ),
            max_leaves=10,
        ).map(lambda value: json.dumps(value).encode()),
        st.fixed_dictionaries(
            {
                "services": st.lists(
                    st.fixed_dictionaries(
                        {
                            "service_id": st.one_of(st.text(max_size=4), st.integers()),
                            "properties": st.one_of(
                                st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
                                st.integers(),
                            ),
                        }
                    ),
                    max_size=7,
                ),
                "shadow": st.lists(
                    st.fixed_dictionaries(
                        {
                            "service_id": st.text(max_size=4),
                            "desired": st.one_of(
                                st.none(),
                                st.fixed_dictionaries(
                                    {
                                        "properties": st.dictionaries(
                                            st.text(max_size=3), st.integers(), max_size=2
                                        )
                                    }
                                ),
                            ),
                        }
                    ),
                    max_size=3,
                ),
            }
        ).map(lambda value: json.dumps(value).encode()),
    ),
)
def test_arbitrary_bytes_on_desired_state_topics_raise_only_protocol_errors(
    suffix: str, payload: bytes
) -> None:
    """Anything on the desired-state topics decodes or raises RemoteProtocolError."""
    profile = _profile()
    answered: bool | None = None
    try:
        event = profile.decode(SYS + suffix, payload)
    except RemoteProtocolError as exc:
        answered = exc.reply is not None
    if answered is None:
        assert event.kind in {"desired_state", "state_query", "ignored"}
    else:
        assert answered == suffix.startswith("properties/set")

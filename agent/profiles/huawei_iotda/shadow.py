"""Huawei IoTDA desired state: property set/get requests, shadow reads, property reports.

``updateDeviceShadows`` only writes the shadow's ``desired`` half. The platform pushes desired
values as property-set requests (answered with ``result_code``/``result_desc`` within 20 s)
while the device is online; the device catches up on what changed while it was offline by
reading the shadow (``shadow/get``) after every connect, and reports what it applied with
``properties/report`` so that ``reported`` converges and the platform stops pushing.
"""

from __future__ import annotations

from typing import Any

from agent.core.errors import RemoteProtocolError
from agent.core.merge_patch import pending
from agent.core.model import (
    DesiredState,
    DesiredStateQuery,
    DesiredStateResult,
    Ignored,
    Publish,
    StateQuery,
    StateReport,
)
from agent.profiles.base import dump_json, parse_json
from agent.profiles.huawei_iotda import wire

# updateDeviceShadows: "service_id and desired required, at most 5 service_ids, content
# <= 10 KB" (cloud SDK model docs); the agent holds every desired document to the same bounds.
MAX_SERVICES = 5
MAX_DESIRED_BYTES = 10 * 1024
# result_code values (py-sdk IotResult): 0 success, 1 failure.
RESULT_OK = 0
RESULT_FAILED = 1


def _sections(services: list[wire.ServiceProperties], what: str) -> dict[str, Any]:
    """Map services to sections, holding the document to the platform's limits."""
    if not services:
        raise RemoteProtocolError(f"{what} names no service")
    if len(services) > MAX_SERVICES:
        raise RemoteProtocolError(
            f"{what} names {len(services)} services; at most {MAX_SERVICES} are accepted"
        )
    sections: dict[str, Any] = {}
    for service in services:
        if not service.service_id:
            raise RemoteProtocolError(f"{what} has a service with an empty service_id")
        if service.service_id in sections:
            raise RemoteProtocolError(f"{what} names service {service.service_id!r} twice")
        sections[service.service_id] = service.properties
    size = len(dump_json(sections))
    if size > MAX_DESIRED_BYTES:
        raise RemoteProtocolError(
            f"{what} of {size} bytes exceeds the {MAX_DESIRED_BYTES}-byte limit"
        )
    return sections


def _own(object_device_id: str | None, device_id: str, what: str) -> None:
    target = (object_device_id or "").strip()
    if target and target != device_id:
        raise RemoteProtocolError(
            f"{what} for child device {target!r}: desired state of child devices is not "
            "supported by this agent"
        )


def decode_properties_set(device_id: str, key: str, rid: str, payload: bytes) -> DesiredState:
    """A property-set request as desired state the platform waits for an answer to.

    Raises:
        RemoteProtocolError: the request is malformed or beyond the limits (the caller
            attaches the answer).
    """
    body = wire.parse(wire.PropertiesSetDown, parse_json(payload), what="property set")
    _own(body.object_device_id, device_id, "property set")
    return DesiredState(
        key=key,
        device_id=device_id,
        source="push",
        correlation=rid,
        sections=_sections(body.services, "property set"),
    )


def decode_shadow_response(device_id: str, key: str, payload: bytes) -> DesiredState | Ignored:
    """The shadow read after a connect: the desired properties ``reported`` does not hold yet.

    Raises:
        RemoteProtocolError: the response is malformed or beyond the limits.
    """
    body = wire.parse(wire.ShadowGetResponse, parse_json(payload), what="shadow response")
    _own(body.object_device_id, device_id, "shadow response")
    wanted: list[wire.ServiceProperties] = []
    reported: dict[str, Any] = {}
    for service in body.shadow:
        have = (service.reported.properties if service.reported else None) or {}
        reported[service.service_id] = have
        want = (service.desired.properties if service.desired else None) or {}
        left = pending(want, have)
        if left:
            wanted.append(wire.ServiceProperties(service_id=service.service_id, properties=left))
    if not wanted:
        return Ignored(reason="the shadow holds no desired value that is not reported")
    return DesiredState(
        key=key,
        device_id=device_id,
        source="sync",
        sections=_sections(wanted, "shadow desired state"),
        reported=reported,
    )


def decode_properties_get(device_id: str, key: str, rid: str, payload: bytes) -> StateQuery:
    """A property query: answered with the applied state.

    Raises:
        RemoteProtocolError: the query is malformed.
    """
    body = wire.parse(wire.PropertiesGetDown, parse_json(payload), what="property query")
    _own(body.object_device_id, device_id, "property query")
    return StateQuery(key=key, device_id=device_id, correlation=rid, section=body.service_id)


def encode_result(prefix: str, result: DesiredStateResult) -> list[Publish]:
    """The property-set answer (when one is awaited) and a report of newly applied values."""
    publishes: list[Publish] = []
    if result.correlation is not None:
        code = RESULT_OK if result.ok else RESULT_FAILED
        topic = f"{prefix}properties/set/response/request_id={result.correlation}"
        body = {"result_code": code, "result_desc": result.description}
        publishes.append(Publish(topic=topic, payload=dump_json(body)))
    if result.reported:
        publishes.append(report(prefix, result.reported))
    return publishes


def report(prefix: str, sections: dict[str, Any]) -> Publish:
    """A ``properties/report`` of service properties.

    ``event_time`` is left out: the profile reads no clock, and the platform then uses the
    time it received the report (iot_06_v5_3006).
    """
    services = [
        {"service_id": service, "properties": properties}
        for service, properties in sections.items()
    ]
    return Publish(topic=f"{prefix}properties/report", payload=dump_json({"services": services}))


def encode_query(prefix: str, device_id: str, query: DesiredStateQuery) -> Publish:
    """``shadow/get`` for every service of the device (a child is named in the body)."""
    body: dict[str, Any] = {}
    if query.device_id != device_id:
        body["object_device_id"] = query.device_id
    topic = f"{prefix}shadow/get/request_id={query.correlation}"
    return Publish(topic=topic, payload=dump_json(body))


def encode_state_report(prefix: str, answer: StateReport) -> Publish:
    """The answer to a property query."""
    services = [
        {"service_id": service, "properties": properties if isinstance(properties, dict) else {}}
        for service, properties in answer.sections.items()
    ]
    topic = f"{prefix}properties/get/response/request_id={answer.correlation}"
    return Publish(topic=topic, payload=dump_json({"services": services}))

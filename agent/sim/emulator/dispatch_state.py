"""Desired state and the other dialects' task types, delivered over MQTT.

* IoTDA ``updateDeviceShadows``: the desired properties pushed as a property-set request; the
  device's ``result_code`` decides.
* Tencent ``UpdateShadow``: the platform's shadow (:class:`TencentShadow`) takes the desired
  change and pushes the delta; the subtask succeeds once the device's reported state holds it
  (or fails when the device reports the change failed). The shadow service also answers the
  device's ``get`` and ``update`` requests, as the cloud does.
* Tencent ``PublishMessage``: the payload on ``{pid}/{dn}/{topic}``, done once the broker has
  published it (accepted it; not a sign that the device received it).
* Tencent sub-devices: deltas and messages go only to children their gateway reported online
  (:class:`~agent.sim.emulator.tencent_gateways.TencentGateways`).
* OceanConnect ``DeviceCmd``: a ``cloudReq`` whose 16-bit ``mid`` is derived from the task,
  subtask and attempt (so it survives an emulator restart); ``deviceRsp`` ``errcode`` decides.
* WeData 30/35: the script task as a command named after the task, ``TaskExt`` in its
  ``paras``, over the device's own command channel (IoTDA or OceanConnect).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from agent.core.merge_patch import pending
from agent.core.model import Publish
from agent.profiles.huawei_oceanconnect.platform import OceanConnectPlatform
from agent.profiles.tencent_iothub.platform import TencentIothubPlatform
from agent.sim.emulator.dispatch import Answer, DeviceOffline, UplinkReader, Verdict
from agent.sim.emulator.dispatch_huawei import COMMAND_TIMEOUT_S, HuaweiCommands, _route
from agent.sim.emulator.records import HUAWEI_IOTDA, OCEANCONNECT, Device, Subtask, Task
from agent.sim.emulator.tencent_gateways import TencentGateways
from agent.sim.shadows import TencentShadow

STATUS_KEY = "device_agent"  # where the agent reports each desired-state outcome (Tencent)


class HuaweiShadows:
    """``updateDeviceShadows``: a property-set request with each service's desired properties."""

    fire_and_forget: bool = False

    def __init__(self, reader: UplinkReader, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        self.reader: UplinkReader | None = reader
        self.timeout_s: float = timeout_s

    def downlinks(
        self, task: Task, subtask: Subtask, device: Device, correlation: str
    ) -> list[Publish]:
        """The property set, on the device's (or its gateway's) topic."""
        services = {s["service_id"]: s["desired"] for s in task.request["document"]["shadow"]}
        platform, child = _route(device)
        return [platform.properties_set(correlation, services, object_device_id=child)]


def oceanconnect_mid(task_id: str, seq: int, attempt: int) -> int:
    """A ``mid`` (1-65535) for one attempt, the same after an emulator restart."""
    digest = hashlib.sha256(f"{task_id}/{seq}/{attempt}".encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % 65535


def oceanconnect_correlation(device_id: str, mid: int) -> str:
    """How an OceanConnect attempt is found again from its answer."""
    return f"oc/{device_id}/{mid}"


class OceanConnectReader:
    """Reads ``deviceRsp`` answers from every OceanConnect device."""

    name = "huawei-oceanconnect"

    def filters(self) -> list[str]:
        """``/huawei/v1/devices/+/data/json``."""
        return OceanConnectPlatform("+").uplink_filters()

    def read(self, topic: str, payload: bytes) -> Answer | None:
        """The answer in a ``deviceRsp``."""
        parts = topic.split("/")
        if len(parts) != 7 or parts[:4] != ["", "huawei", "v1", "devices"]:
            return None
        answer = OceanConnectPlatform(parts[4]).decode_uplink(topic, payload)
        correlation = oceanconnect_correlation(answer.device_id, answer.mid)
        output = {"errcode": answer.errcode, "body": answer.body}
        if answer.errcode == 0:
            return Answer(correlation, Verdict(ok=True, output=output))
        error = answer.body.get("error") if isinstance(answer.body, dict) else None
        return Answer(
            correlation, Verdict.failed(str(answer.errcode), str(error or "failed"), output)
        )


class OceanConnectCommands:
    """``DeviceCmd``: a ``cloudReq`` per device, answered with ``deviceRsp``."""

    fire_and_forget: bool = False

    def __init__(self, reader: UplinkReader, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        self.reader: UplinkReader | None = reader
        self.timeout_s: float = timeout_s

    def correlate(self, task: Task, subtask: Subtask, device: Device) -> str:
        """The correlation the answer will carry (device and ``mid``)."""
        mid = oceanconnect_mid(task.task_id, subtask.seq, subtask.attempts)
        return oceanconnect_correlation(device.device_id, mid)

    def downlinks(
        self, task: Task, subtask: Subtask, device: Device, correlation: str
    ) -> list[Publish]:
        """The ``cloudReq``."""
        command = task.request["param"]["command"]
        mid = int(correlation.rsplit("/", 1)[1])
        return [
            OceanConnectPlatform(device.device_id).command(
                mid, command["method"], command.get("paras") or {}, service_id=command["serviceId"]
            )
        ]


class WeDataScripts:
    """WeData script tasks as commands named after the task, over each device's own channel."""

    fire_and_forget: bool = False

    def __init__(
        self, huawei: HuaweiCommands, oceanconnect: OceanConnectCommands, timeout_s: float
    ) -> None:
        self.reader: UplinkReader | None = None  # answers arrive through the dialects' readers
        self.timeout_s: float = timeout_s
        self._huawei = huawei
        self._oceanconnect = oceanconnect

    def correlate(self, task: Task, subtask: Subtask, device: Device) -> str | None:
        """OceanConnect devices answer by ``mid``; others by the request id."""
        if device.platform == OCEANCONNECT:
            return self._oceanconnect.correlate(task, subtask, device)
        return None

    def downlinks(
        self, task: Task, subtask: Subtask, device: Device, correlation: str
    ) -> list[Publish]:
        """The command, with ``TaskExt`` and ``TaskType`` in its ``paras``."""
        paras = {"TaskExt": task.request.get("TaskExt", []), "TaskType": int(task.task_type)}
        if device.platform == OCEANCONNECT:
            param = {"command": {"serviceId": "WeData", "method": task.name, "paras": paras}}
            as_cmd = _with_request(task, {"param": param})
            return self._oceanconnect.downlinks(as_cmd, subtask, device, correlation)
        if device.platform == HUAWEI_IOTDA:
            document = {"command_name": task.name, "paras": paras}
            return self._huawei.downlinks(
                _with_request(task, {"document": document}), subtask, device, correlation
            )
        msg = f"{device.platform} devices have no command channel for script tasks"
        raise ValueError(msg)


def _with_request(task: Task, request: dict[str, Any]) -> Task:
    copy = Task(**{f: getattr(task, f) for f in Task.__dataclass_fields__})
    copy.request = request
    return copy


class TencentMessages:
    """``PublishMessage``: fire and forget on the device's custom topic.

    The subtask succeeds once the broker has *published* the message (accepted it: PUBACK to
    the task service), which says nothing about the device receiving it. A gateway's child
    that is not online fails at once with ``FailedOperation.DeviceOffline``.
    """

    fire_and_forget: bool = True
    reader: UplinkReader | None = None

    def __init__(
        self, timeout_s: float = 86400.0, *, gateways: TencentGateways | None = None
    ) -> None:
        self.timeout_s: float = timeout_s
        self._gateways = gateways

    def downlinks(
        self, task: Task, subtask: Subtask, device: Device, correlation: str
    ) -> list[Publish]:
        """The payload, verbatim."""
        if self._gateways is not None and not self._gateways.reachable(device):
            msg = f"{device.name} is a sub-device its gateway has not reported online"
            raise DeviceOffline(msg, code="FailedOperation.DeviceOffline")
        publish = task.request["Tasks"]["PublishMessageTask"]
        platform = TencentIothubPlatform(device.product_id, device.name)
        return [platform.message(publish["Topic"], publish["Payload"].encode())]


class TencentShadowService:
    """The shadow service for every Tencent device, and ``UpdateShadow`` on top of it.

    It is both the dispatcher (a desired change pushes a delta) and the reader of the devices'
    shadow requests (answered with the shadow service's replies through ``publish``).
    """

    name = "tencent-iothub"
    fire_and_forget: bool = False
    # Deltas go out at QoS 0 and the shadow service does not keep them: a device that missed
    # one (it reconnected, the broker restarted) would only catch up by asking, and its request
    # can be lost the same way. Pushing what is still pending again now and then closes the gap;
    # the agent recognises a delta it has applied already.
    resend_every_s: float = 3.0

    def __init__(
        self,
        timeout_s: float = 86400.0,
        clock: Callable[[], float] = time.time,
        *,
        gateways: TencentGateways | None = None,
    ) -> None:
        self.reader: UplinkReader | None = self
        self.timeout_s: float = timeout_s
        self._clock = clock
        self._gateways = gateways
        self._shadows: dict[tuple[str, str], TencentShadow] = {}
        # (pid, dn) -> {correlation: desired change it waits for}
        self._waiting: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._deltas: dict[str, Publish] = {}  # correlation -> the delta its attempt pushed
        self.publish: Callable[[Publish], None] = lambda _: None

    def attach(self, publish: Callable[[Publish], None]) -> None:
        """Where the shadow service's replies go (the task service's MQTT link)."""
        self.publish = publish

    def filters(self) -> list[str]:
        """``$shadow/operation/+/+``."""
        return ["$shadow/operation/+/+"]

    def _shadow(self, product_id: str, name: str) -> TencentShadow:
        key = (product_id, name)
        shadow = self._shadows.get(key)
        if shadow is None:
            shadow = self._shadows[key] = TencentShadow(product_id, name)
        return shadow

    def downlinks(
        self, task: Task, subtask: Subtask, device: Device, correlation: str
    ) -> list[Publish]:
        """Merge the desired change and push its delta (nothing when it is already reported)."""
        change = json.loads(task.request["Tasks"]["UpdateShadowTask"]["Desired"])
        shadow = self._shadow(device.product_id, device.name)
        waiting = self._waiting.setdefault((device.product_id, device.name), {})
        if not pending(change, shadow.reported):
            waiting.pop(correlation, None)
            return []
        if correlation in waiting:
            # Sent again: the same delta, same version. A new version would make the device's
            # update (carrying the version it saw) a 5005 conflict.
            last = self._deltas.get(correlation)
            return self._to(device, [last] if last is not None else [])
        delta = shadow.set_desired(change, int(self._clock()))
        waiting[correlation] = change
        if delta is None:
            return []
        self._deltas[correlation] = delta
        return self._to(device, [delta])

    def _to(self, device: Device, deltas: list[Publish]) -> list[Publish]:
        """The deltas, or none for a child that is not online (pushed once it is)."""
        if deltas and self._gateways is not None and not self._gateways.reachable(device):
            msg = f"{device.name} is a sub-device its gateway has not reported online"
            raise DeviceOffline(msg, hold=True)
        return deltas

    def read(self, topic: str, payload: bytes) -> list[Answer] | None:
        """Answer a device's shadow request; the subtasks its reported state completes."""
        parts = topic.split("/")
        if len(parts) != 4 or parts[:2] != ["$shadow", "operation"]:
            return None
        product_id, name = parts[2], parts[3]
        request = TencentIothubPlatform(product_id, name).decode_uplink(topic, payload)
        shadow = self._shadow(product_id, name)
        self.publish(shadow.handle(request, int(self._clock())))
        if request.type != "update":
            return None
        return self._settle((product_id, name), shadow)

    def _settle(self, key: tuple[str, str], shadow: TencentShadow) -> list[Answer]:
        waiting = self._waiting.get(key, {})
        status = shadow.reported.get(STATUS_KEY)
        answers = []
        for correlation, change in list(waiting.items()):
            if not pending(change, shadow.reported):
                answers.append(Answer(correlation, Verdict(ok=True, output={"reported": True})))
                del waiting[correlation]
                self._deltas.pop(correlation, None)
            elif isinstance(status, dict) and status.get("result") == "failed":
                reason = str(status.get("description") or "the device could not apply it")
                answers.append(Answer(correlation, Verdict.failed("APPLY_FAILED", reason, status)))
                del waiting[correlation]
                self._deltas.pop(correlation, None)
        return answers

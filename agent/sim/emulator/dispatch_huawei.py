"""Huawei IoTDA task types delivered over MQTT: ``createCommands`` and ``createMessages``.

Downlinks are built, and answers read, by :class:`~agent.profiles.huawei_iotda.HuaweiIotdaPlatform`
(the platform side of the agent's own codec). A child device is reached through its gateway's
topics with ``object_device_id`` set to the child.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from agent.core.model import Publish
from agent.profiles.huawei_iotda import HuaweiIotdaPlatform
from agent.profiles.huawei_iotda.platform import CommandAnswer, PropertiesSetAnswer, user_topic
from agent.sim.emulator.dispatch import Answer, Report, UplinkReader, Verdict
from agent.sim.emulator.records import Device, Subtask, Task

# IoTDA waits 20 s for a synchronous command's answer (iot_06_v5_0038, "Deliver a Command").
COMMAND_TIMEOUT_S = 20.0
# Messages are cached for a day before they time out.
MESSAGE_TIMEOUT_S = 86400.0


def ota_correlation(device_id: str) -> str:
    """How reports about a device find its upgrade attempt (``$ota`` events carry no ids)."""
    return f"ota/{device_id}"


def _route(device: Device) -> tuple[HuaweiIotdaPlatform, str | None]:
    """The connection a device is reached on, and the child id when it is behind a gateway."""
    if device.gateway_id:
        return HuaweiIotdaPlatform(device.gateway_id), device.device_id
    return HuaweiIotdaPlatform(device.device_id), None


class HuaweiReader:
    """Reads command and property-set answers, and ``$ota`` reports, from every IoTDA device."""

    name = "huawei-iotda"

    def __init__(self, *, strict: bool = True) -> None:
        self._any = HuaweiIotdaPlatform("+")
        self.strict = strict  # reports breaking a documented rule fail their upgrade

    def filters(self) -> list[str]:
        """The platform's uplink filters, for every device."""
        return self._any.uplink_filters()

    def read(self, topic: str, payload: bytes) -> Answer | list[Report] | None:
        """An answer to a request id, the upgrade reports of an event, or None."""
        if topic.endswith("/sys/events/up"):
            # Events carry no request id: a report finds its upgrade by the device it is about.
            return [
                Report(ota_correlation(report.device_id), report)
                for report in self._any.decode_ota(topic, payload, strict=self.strict)
            ]
        if "/response/" not in topic:
            return None
        answer = self._any.decode_uplink(topic, payload)
        if isinstance(answer, CommandAnswer):
            return _command_answer(answer)
        if not isinstance(answer, PropertiesSetAnswer):
            return None  # reports, queries answered and shadow reads answer no subtask
        output = {"result_code": answer.result_code, "result_desc": answer.result_desc}
        if answer.result_code == 0:
            return Answer(answer.request_id, Verdict(ok=True, output=output))
        return Answer(
            answer.request_id,
            Verdict.failed(str(answer.result_code), answer.result_desc or "failed", output),
        )


def _command_answer(answer: CommandAnswer) -> Answer:
    output: dict[str, Any] = {"result_code": answer.result_code, "paras": answer.paras}
    if answer.response_name is not None:
        output["response_name"] = answer.response_name
    if answer.result_code == 0:
        return Answer(answer.request_id, Verdict(ok=True, output=output))
    error = answer.paras.get("error") if isinstance(answer.paras, dict) else None
    message = str(error or answer.response_name or f"result_code {answer.result_code}")
    return Answer(answer.request_id, Verdict.failed(str(answer.result_code), message, output))


class HuaweiCommands:
    """``createCommands``: one synchronous command per device, answered within the deadline.

    A command is not delivered to an offline device: the attempt fails (``IOTDA.014016``).
    """

    fire_and_forget: bool = False
    when_offline: str = "fail"

    def __init__(self, reader: HuaweiReader, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        self.reader: UplinkReader | None = reader
        self.timeout_s: float = timeout_s

    def downlinks(
        self, task: Task, subtask: Subtask, device: Device, correlation: str
    ) -> list[Publish]:
        """The command request, on the device's (or its gateway's) command topic."""
        document = task.request.get("document") or {}
        platform, child = _route(device)
        return [
            platform.command(
                correlation,
                document["command_name"],
                document.get("paras") or {},
                service_id=document.get("service_id"),
                object_device_id=child,
            )
        ]


class HuaweiMessages:
    """``createMessages``: fire and forget; done once the broker holds the message."""

    fire_and_forget: bool = True

    def __init__(self, reader: HuaweiReader, timeout_s: float = MESSAGE_TIMEOUT_S) -> None:
        self.reader: UplinkReader | None = reader
        self.timeout_s: float = timeout_s

    def downlinks(
        self, task: Task, subtask: Subtask, device: Device, correlation: str
    ) -> list[Publish]:
        """The message, in the system format or raw, on the default or a custom topic."""
        document = task.request.get("document") or {}
        platform, child = _route(device)
        topic = document.get("topic_full_name")
        if topic is None and document.get("topic"):
            topic = user_topic(platform.device_id, document["topic"])
        message = document.get("message", "")
        content: str | bytes = message if isinstance(message, str) else _json_text(message)
        if document.get("encoding") == "base64" and isinstance(content, str):
            content = base64.b64decode(content)
        return [
            platform.message(
                content,
                message_id=document.get("message_id") or correlation,
                name=document.get("name"),
                object_device_id=child,
                raw=document.get("payload_format") == "raw",
                topic=topic,
            )
        ]


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

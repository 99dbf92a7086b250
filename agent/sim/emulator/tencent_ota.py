"""Tencent IoT Hub ``$ota`` reports as the platform reads them: strictly, answering versions.

Every publication on ``$ota/report/{pid}/{dn}`` is read by
:func:`agent.profiles.tencent_iothub.ota_platform.read_report`: a report that breaks a rule of
设备固件升级.md (a state outside downloading/burning/done/fail, a ``result_code`` that is not a
string or not a documented code, ``percent`` outside 0-100, an empty ``version``...) is rejected
with a reason naming the field (logged as ``emulator.uplink.rejected`` and counted in the link's
``bad_uplinks``) and kept in :attr:`TencentOtaReports.rejected`. A ``report_version`` is answered
with ``report_version_rsp``, as the platform does. No Tencent upgrade task type reaches devices
in this build (the seeds have no Tencent OTA API), so reports end no subtask; the last accepted
version and progress of each device are kept for whoever drives an upgrade.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.core.errors import RemoteProtocolError
from agent.core.model import Publish
from agent.profiles.tencent_iothub import ota_platform as op


class TencentOtaReports:
    """The reader of every Tencent device's ``$ota`` reports."""

    name = "tencent-ota"

    def __init__(self) -> None:
        self.publish: Callable[[Publish], None] = lambda _: None
        self.versions: dict[tuple[str, str], str] = {}
        self.progress: dict[tuple[str, str], op.TencentProgressReported] = {}
        self.rejected: list[tuple[str, str]] = []  # (topic, reason), the most recent last

    def attach(self, publish: Callable[[Publish], None]) -> None:
        """Where ``report_version_rsp`` goes (the task service's MQTT link)."""
        self.publish = publish

    def filters(self) -> list[str]:
        """``$ota/report/+/+``."""
        return ["$ota/report/+/+"]

    def read(self, topic: str, payload: bytes) -> None:
        """Check one report; answer a version report.

        Raises:
            RemoteProtocolError: the report breaks a rule (the reason names the field).
        """
        levels = topic.split("/")
        if len(levels) != 4 or levels[:2] != ["$ota", "report"]:
            return  # another reader's uplink
        try:
            report = op.read_report(topic, payload)
        except RemoteProtocolError as exc:
            self.rejected = [*self.rejected[-99:], (topic, exc.reason)]
            raise
        key = (report.product_id, report.device_name)
        if isinstance(report, op.TencentVersionReported):
            self.versions[key] = report.version
            self.publish(op.version_response(*key, report.version))
        else:
            self.progress[key] = report

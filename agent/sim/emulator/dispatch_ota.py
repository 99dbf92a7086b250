"""IoTDA ``firmwareUpgrade``/``softwareUpgrade``: the ``$ota`` conversation, played as the platform.

One attempt of an upgrade subtask goes through two stages (reference §6, usermanual
iot_01_0047):

1. ``version``: a ``version_query`` to the device (a child: on its gateway's topic with
   ``object_device_id``), answered by a ``version_report`` within ``version_timeout_s`` (IoTDA:
   3 minutes). A reported version (``fw_version`` for firmware, ``sw_version`` for software)
   equal to the package's ends the subtask in success without an upgrade ("no upgrade is
   required. The upgrade task is marked successful").
2. ``upgrade``: ``firmware_upgrade``/``software_upgrade`` (``*_v2`` for a package kept "in OBS",
   whose URL is pre-signed and carries no ``access_token``) with the package's URL on the
   emulator's package server, ``file_size``, ``file_name``, a per-device ``access_token`` and its
   ``expires``, ``sign`` (SHA-256). The device's ``upgrade_progress_report``s move the
   subtask's progress; the final one decides (``result_code`` 0 with the package's version:
   success; any other code: failure with that code), within ``upgrade_timeout_s`` (IoTDA: 24 h).

In ``task_mode: GATEWAY`` a child's events also carry ``task_id`` and ``sub_device_count`` (how
many of its gateway's children the task upgrades); every upgrade event carries the task's
``task_ext_info``. Events carry an ``event_id`` derived from the attempt and stage, so an event
sent again after a reconnect is recognised by the agent as the one it has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import quote

from agent.core.model import Publish
from agent.profiles.huawei_iotda.ota_platform import ProgressReported, VersionReported, judge
from agent.sim.emulator.dispatch import Report, Step, UplinkReader, Verdict
from agent.sim.emulator.dispatch_huawei import _route, ota_correlation
from agent.sim.emulator.records import Device, Subtask, Task
from agent.sim.emulator.registry import TOKEN_TTL_S, Package, Registry

VERSION = "version"
UPGRADE = "upgrade"
# IoTDA waits 3 minutes for the version report and 24 hours for the upgrade's result.
VERSION_TIMEOUT_S = 180.0
UPGRADE_TIMEOUT_S = 86400.0
# Package locations: kept by the platform (``*_upgrade``) or in OBS (``*_upgrade_v2``).
OBS = "obs"
_EVENT_TYPES = {"firmwareUpgrade": "firmware_upgrade", "softwareUpgrade": "software_upgrade"}
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"


class HuaweiUpgrades:
    """A :class:`~agent.sim.emulator.dispatch.Conversation` for IoTDA upgrade tasks."""

    fire_and_forget: bool = False

    def __init__(
        self,
        reader: UplinkReader,
        *,
        version_timeout_s: float = VERSION_TIMEOUT_S,
        upgrade_timeout_s: float = UPGRADE_TIMEOUT_S,
    ) -> None:
        self.reader: UplinkReader | None = reader
        self.timeout_s: float = version_timeout_s
        self.version_timeout_s = version_timeout_s
        self.upgrade_timeout_s = upgrade_timeout_s
        self._registry: Registry | None = None
        self._base_url: Callable[[], str] = lambda: ""
        self._clock: Callable[[], float] = time.time

    def bind(
        self, registry: Registry, base_url: Callable[[], str], clock: Callable[[], float]
    ) -> None:
        """Where packages and tokens come from, and the package server's URL (once it listens)."""
        self._registry = registry
        self._base_url = base_url
        self._clock = clock

    # -- the conversation -----------------------------------------------------------------

    def correlate(self, task: Task, subtask: Subtask, device: Device) -> str:
        """Reports name the device, not the task: one upgrade per device at a time."""
        return ota_correlation(device.device_id)

    def stage_timeout(self, task: Task, subtask: Subtask) -> float:
        """3 minutes for the version report, 24 hours for the upgrade (unless configured)."""
        return self.upgrade_timeout_s if subtask.stage == UPGRADE else self.version_timeout_s

    def timeout_message(self, subtask: Subtask, waited: float) -> str:
        """Which answer did not come."""
        if subtask.stage == UPGRADE:
            return f"no upgrade result within {waited:g} s (last progress {subtask.progress} %)"
        return f"no version_report within {waited:g} s"

    def downlinks(
        self, task: Task, subtask: Subtask, device: Device, correlation: str
    ) -> list[Publish]:
        """The current stage's event: the version query, or the upgrade notification."""
        package = self._package(task)
        platform, child = _route(device)
        stage = subtask.stage or VERSION
        now = self._clock()
        gateway_mode = task.request.get("task_mode") == "GATEWAY" and device.gateway_id is not None
        task_id = task.task_id if gateway_mode else None
        count = task.extra.get("sub_device_count", {}).get(device.gateway_id or "")
        sub_device_count = count if gateway_mode else None
        ext = task.request.get("task_ext_info")
        event_id = f"{task.task_id}-{subtask.seq}-{subtask.attempts}-{stage}"
        event_time = datetime.fromtimestamp(now, UTC).strftime(_TIME_FORMAT)
        if stage == VERSION:
            return [
                platform.version_query(
                    object_device_id=child,
                    task_id=task_id,
                    sub_device_count=sub_device_count,
                    task_ext_info=ext,
                    event_time=event_time,
                    event_id=event_id,
                )
            ]
        registry = self._bound()
        token = registry.issue_token(package.package_id, now, subject=device.device_id)
        base = self._base_url()
        if not base:
            msg = "the package server is not listening yet"
            raise ValueError(msg)
        url = f"{base}/ota/packages/{package.package_id}?device={quote(device.device_id, safe='')}"
        event_type = _EVENT_TYPES[task.task_type]
        access_token: str | None = token
        if package.location == OBS:
            # A pre-signed link: the token travels in the URL, the event has none.
            url, event_type, access_token = f"{url}&token={token}", f"{event_type}_v2", None
        return [
            platform.upgrade(
                version=package.version,
                url=url,
                sign=package.sha256,
                file_size=package.size,
                event_type=event_type,
                file_name=package.name,
                access_token=access_token,
                expires=int(TOKEN_TTL_S),
                object_device_id=child,
                task_id=task_id,
                sub_device_count=sub_device_count,
                task_ext_info=ext,
                event_time=event_time,
                event_id=event_id,
            )
        ]

    def interpret(self, task: Task, subtask: Subtask, report: Report) -> Verdict | Step | None:
        """What a version report or a progress report means for the attempt in flight.

        A version report decides between "already there" and the upgrade; progress reports move
        the subtask's progress, the final one ends it.
        """
        data = report.data
        target = self._package(task).version
        if isinstance(data, VersionReported):
            if subtask.stage not in (None, VERSION):
                return None  # versions reported after a reconnect, mid-upgrade
            running = data.version(task.task_type)
            if running == target:
                return Verdict(ok=True, output={"version": running, "upgraded": False})
            return Step(stage=UPGRADE, progress=0)
        if isinstance(data, ProgressReported) and subtask.stage == UPGRADE:
            return _progress(data, target)
        return None  # a report from an earlier attempt

    # -- helpers --------------------------------------------------------------------------

    def _bound(self) -> Registry:
        if self._registry is None:
            msg = "the upgrade dispatcher has no registry"
            raise ValueError(msg)
        return self._registry

    def _package(self, task: Task) -> Package:
        package_id = task.request["document"]["package_id"]
        package = self._bound().packages.get(package_id)
        if package is None:
            msg = f"package {package_id} no longer exists"
            raise ValueError(msg)
        return package


def _progress(report: ProgressReported, target: str) -> Verdict | Step:
    """Progress moves the subtask on; a final report ends it."""
    judgement = judge(report, target)
    if judgement.outcome == "in_progress":
        return Step(progress=judgement.progress)
    output = {
        "result_code": report.result_code,
        "version": report.version,
        "progress": report.progress,
        "description": report.description,
    }
    if judgement.outcome == "success":
        return Verdict(ok=True, output={**output, "upgraded": True})
    return Verdict.failed(str(judgement.code), judgement.message, output)

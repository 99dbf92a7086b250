"""IoTDA ``firmwareUpgrade``/``softwareUpgrade``: the ``$ota`` conversation, played as the platform.

One attempt of an upgrade subtask goes through two stages (IoTDA docs iot_06_v5_3028-3031,
usermanual iot_01_0047; see docs/platforms.md, Sources):

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

In ``task_mode: GATEWAY`` a child's events also carry ``task_id`` and ``sub_device_count`` (how many
of its gateway's children the task upgrades); every upgrade event carries the task's
``task_ext_info``. Events are shaped as the documentation's examples and the field capture
(iot_06_v5_3030 and the 2022 ``firmware_upgrade`` in docs/platforms.md, Sources):
``object_device_id`` names the device (a child, or the directly connected device itself) and there
is no ``event_id``.

Strictly (the default), a report that breaks a documented rule fails the attempt with a reason
naming the field (``INVALID_REPORT``), and so does a ``version`` that is neither the version the
device reported running nor the package's. With ``strict_faq``, a report that arrives before the
device finished downloading the package is taken as the upgrade's result, as the IoTDA FAQ on OTA
upgrades says (quoted in docs/upgrades.md): the attempt ends on it and the package can no longer be
downloaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import quote

from agent.core.model import Publish
from agent.profiles.huawei_iotda.ota_platform import (
    VERSION_FIELDS,
    ProgressReported,
    RejectedReport,
    VersionReported,
    judge,
)
from agent.sim.emulator.dispatch import Report, Step, UplinkReader, Verdict
from agent.sim.emulator.dispatch_huawei import _route, ota_correlation
from agent.sim.emulator.ota_downloads import PackageDownloads
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
INVALID_REPORT = "INVALID_REPORT"
RESULT_BEFORE_DOWNLOAD = "RESULT_BEFORE_DOWNLOAD"


class HuaweiUpgrades:
    """A :class:`~agent.sim.emulator.dispatch.Conversation` for IoTDA upgrade tasks.

    An upgrade waits for its device to come online (the engine's ``online_timeout_s``).
    """

    fire_and_forget: bool = False
    when_offline: str = "wait"

    def __init__(
        self,
        reader: UplinkReader,
        *,
        version_timeout_s: float = VERSION_TIMEOUT_S,
        upgrade_timeout_s: float = UPGRADE_TIMEOUT_S,
        strict: bool = True,
        strict_faq: bool = False,
    ) -> None:
        self.reader: UplinkReader | None = reader
        self.strict = strict
        self.strict_faq = strict_faq
        self._downloads: PackageDownloads | None = None
        # The version each attempt's device reported running, by subtask (a progress report's
        # version must be it, or the package's).
        self._running: dict[tuple[str, int], str] = {}
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

    def use_downloads(self, downloads: PackageDownloads) -> None:
        """The package server's log (the FAQ rule asks whether a download completed)."""
        self._downloads = downloads

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
        target = child or device.device_id  # the platform names the device itself too
        event_time = datetime.fromtimestamp(now, UTC).strftime(_TIME_FORMAT)
        if stage == VERSION:
            return [
                platform.version_query(
                    object_device_id=target,
                    task_id=task_id,
                    sub_device_count=sub_device_count,
                    task_ext_info=ext,
                    event_time=event_time,
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
                object_device_id=target,
                task_id=task_id,
                sub_device_count=sub_device_count,
                task_ext_info=ext,
                event_time=event_time,
            )
        ]

    def interpret(self, task: Task, subtask: Subtask, report: Report) -> Verdict | Step | None:
        """What a version report or a progress report means for the attempt in flight.

        A version report decides between "already there" and the upgrade; progress reports move
        the subtask's progress, the final one ends it.
        """
        data = report.data
        package = self._package(task)
        target = package.version
        if isinstance(data, RejectedReport):
            stage = subtask.stage or VERSION
            if (data.event_type == "version_report") != (stage == VERSION):
                return None  # about another stage (an earlier attempt's, a reconnect's)
            return Verdict.failed(INVALID_REPORT, data.reason)
        if isinstance(data, VersionReported):
            return self._version_report(task, subtask, data, target)
        if isinstance(data, ProgressReported) and subtask.stage == UPGRADE:
            return self._progress_report(subtask, data, package)
        return None  # a report from an earlier attempt

    def _version_report(
        self, task: Task, subtask: Subtask, data: VersionReported, target: str
    ) -> Verdict | Step | None:
        if subtask.stage not in (None, VERSION):
            return None  # versions reported after a reconnect, mid-upgrade
        running = data.version(task.task_type)
        if self.strict and not running:
            field = VERSION_FIELDS.get(task.task_type, "fw_version")
            return Verdict.failed(
                INVALID_REPORT, f"version_report: {field} is not reported ({task.task_type})"
            )
        if running == target:
            self._running.pop(subtask.key, None)
            return Verdict(ok=True, output={"version": running, "upgraded": False})
        if running:
            self._running[subtask.key] = running
        return Step(stage=UPGRADE, progress=0)

    def _progress_report(
        self, subtask: Subtask, report: ProgressReported, package: Package
    ) -> Verdict | Step:
        target = package.version
        downloads = self._downloads if self.strict_faq else None
        if downloads is not None and not downloads.completed(package.package_id, report.connection):
            # FAQ: a reported result ends the upgrade; downloading again then fails.
            downloads.refuse(package.package_id, report.device_id)
            if judge(report, target).outcome == "success":
                return Verdict(ok=True, output={"version": report.version, "upgraded": True})
            return Verdict.failed(
                RESULT_BEFORE_DOWNLOAD,
                f"upgrade_progress_report (result_code {report.result_code}, progress "
                f"{report.progress}) came before the package was downloaded: the platform "
                "takes it as the upgrade's result and refuses further downloads",
            )
        verdict = _progress(report, target)
        running = self._running.get(subtask.key)
        if isinstance(verdict, Verdict):
            self._running.pop(subtask.key, None)
        elif self.strict and running is not None and report.version not in (running, target):
            # While in progress, the version is the one running (or already the package's).
            return Verdict.failed(
                INVALID_REPORT,
                f"upgrade_progress_report: version {report.version!r} is neither the running "
                f"version {running!r} nor the package's {target!r}",
            )
        return verdict

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

"""The platforms' shadow services played in tests: answer a device's reads and take its reports.

Each wraps the pure platform-side model (:class:`~agent.sim.shadows.TencentShadow`,
:class:`~agent.sim.shadows.HuaweiShadow`) and is used as a
:class:`~tests.support.platform.PlatformClient` responder, on paho's thread; the test thread
changes desired state through the same lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from agent.core.errors import RemoteProtocolError
from agent.core.model import Publish
from agent.profiles.huawei_iotda import HuaweiIotdaPlatform
from agent.profiles.huawei_iotda.platform import PropertiesReport, ShadowGetRequest
from agent.profiles.tencent_iothub import TencentIothubPlatform
from agent.profiles.tencent_iothub.platform import ShadowRequest
from agent.sim.shadows import HuaweiShadow, TencentShadow


class TencentShadowService:
    """IoT Hub's shadow service for one device."""

    def __init__(self, product_id: str, device_name: str) -> None:
        self.platform = TencentIothubPlatform(product_id, device_name)
        self.shadow = TencentShadow(product_id, device_name)
        self.requests: list[ShadowRequest] = []
        # Runs before an update is handled (under the lock): a test may change the shadow.
        self.before_update: Callable[[TencentShadow, ShadowRequest], None] | None = None
        self._lock = threading.Lock()

    def __call__(self, topic: str, payload: bytes) -> list[Publish]:
        """Answer a get or update."""
        try:
            request = self.platform.decode_uplink(topic, payload)
        except RemoteProtocolError:
            return []
        with self._lock:
            self.requests.append(request)
            if request.type == "update" and self.before_update is not None:
                self.before_update(self.shadow, request)
            return [self.shadow.handle(request, now=int(time.time()))]

    def set_desired(self, change: dict[str, Any]) -> Publish | None:
        """An ``UpdateShadow`` task for this device: the delta to push, if any."""
        with self._lock:
            return self.shadow.set_desired(change, now=int(time.time()))

    def snapshot(self) -> tuple[dict[str, Any] | None, dict[str, Any], int]:
        """Desired, reported and version, consistently."""
        with self._lock:
            return self.shadow.desired, dict(self.shadow.reported), self.shadow.version

    def count(self, kind: str) -> int:
        """How many requests of ``kind`` (get, update) the device made."""
        with self._lock:
            return sum(1 for request in self.requests if request.type == kind)


class HuaweiShadowService:
    """IoTDA's device shadow for one device: answers shadow reads, merges property reports."""

    def __init__(self, device_id: str) -> None:
        self.platform = HuaweiIotdaPlatform(device_id)
        self.shadow = HuaweiShadow(device_id)
        self.reads = 0
        self._lock = threading.Lock()

    def __call__(self, topic: str, payload: bytes) -> list[Publish]:
        """Answer reads; take reports."""
        try:
            uplink = self.platform.decode_uplink(topic, payload)
        except RemoteProtocolError:
            return []
        with self._lock:
            if isinstance(uplink, ShadowGetRequest):
                self.reads += 1
                return [self.shadow.response(uplink)]
            if isinstance(uplink, PropertiesReport):
                self.shadow.report(uplink.services)
        return []

    def set_desired(self, service_id: str, properties: dict[str, Any]) -> None:
        """An ``updateDeviceShadows`` subtask for this device."""
        with self._lock:
            self.shadow.set_desired(service_id, properties)

    def reported(self) -> dict[str, dict[str, Any]]:
        """The reported half."""
        with self._lock:
            return {k: dict(v) for k, v in self.shadow.reported.items()}

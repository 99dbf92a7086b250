"""Which dispatcher carries out each task type of each API, in this build.

Types that cannot reach a device (IoTDA asynchronous commands go to LwM2M/CoAP devices only)
are :class:`~agent.sim.emulator.dispatch.Unavailable`: the API accepts them (validation, task
state, progress, stop all work) and their subtasks end as a failure saying why. A type whose
device side is not built yet gets the same treatment; pointing its entry at a real dispatcher
switches it on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.sim.emulator.dispatch import Dispatcher, Unavailable, UplinkReader
from agent.sim.emulator.dispatch_gateway import HuaweiGateways
from agent.sim.emulator.dispatch_huawei import HuaweiCommands, HuaweiMessages, HuaweiReader
from agent.sim.emulator.dispatch_ota import UPGRADE_TIMEOUT_S, VERSION_TIMEOUT_S, HuaweiUpgrades
from agent.sim.emulator.dispatch_registry import CreateDevices, DeleteDevices, Freeze, UpdateDevices
from agent.sim.emulator.dispatch_state import (
    HuaweiShadows,
    OceanConnectCommands,
    OceanConnectReader,
    TencentMessages,
    TencentShadowService,
    WeDataScripts,
)
from agent.sim.emulator.records import HUAWEI_IOTDA, OCEANCONNECT, TENCENT_IOTHUB, TENCENT_WEDATA
from agent.sim.emulator.registry import Registry
from agent.sim.emulator.tencent_gateways import TencentGateways
from agent.sim.emulator.tencent_ota import TencentOtaReports


@dataclass(frozen=True, slots=True)
class DispatcherTable:
    """Dispatchers by ``(api, task_type)``, and the uplink readers they need."""

    entries: dict[tuple[str, str], Dispatcher]
    readers: list[UplinkReader]

    def get(self, api: str, task_type: str) -> Dispatcher:
        """The dispatcher for a task type (every type an API accepts has one)."""
        return self.entries[(api, task_type)]

    def available(self, api: str, task_type: str) -> bool:
        """Whether subtasks of this type can succeed in this build."""
        return not isinstance(self.entries.get((api, task_type)), Unavailable | None)

    def bind(
        self, registry: Registry, base_url: Callable[[], str], clock: Callable[[], float]
    ) -> None:
        """Give dispatchers that need them the registry, the package server's URL and the clock."""
        everyone = [*self.entries.values(), *self.readers]
        for dispatcher in {id(d): d for d in everyone}.values():
            bind = getattr(dispatcher, "bind", None)
            if bind is not None:
                bind(registry, base_url, clock)


def build_table(
    *,
    command_timeout_s: float | None = None,
    version_timeout_s: float = VERSION_TIMEOUT_S,
    upgrade_timeout_s: float = UPGRADE_TIMEOUT_S,
    strict: bool = True,
    strict_faq: bool = False,
) -> DispatcherTable:
    """The table for this build (``strict``: uplinks are held to the documented rules)."""
    huawei = HuaweiReader(strict=strict)
    oceanconnect = OceanConnectReader()
    gateways = TencentGateways()
    shadows = TencentShadowService(gateways=gateways)
    timeout = command_timeout_s or 20.0
    commands = HuaweiCommands(huawei, timeout)
    oc_commands = OceanConnectCommands(oceanconnect, timeout)
    upgrades = HuaweiUpgrades(
        huawei,
        version_timeout_s=version_timeout_s,
        upgrade_timeout_s=upgrade_timeout_s,
        strict=strict,
        strict_faq=strict_faq,
    )
    entries: dict[tuple[str, str], Dispatcher] = {
        (HUAWEI_IOTDA, "createCommands"): commands,
        (HUAWEI_IOTDA, "createMessages"): HuaweiMessages(huawei),
        (HUAWEI_IOTDA, "createAsyncCommands"): Unavailable(
            "asynchronous commands are delivered to LwM2M/CoAP devices only, not over MQTT",
            code="IOTDA.014300",
        ),
        (HUAWEI_IOTDA, "updateDeviceShadows"): HuaweiShadows(huawei, timeout),
        (HUAWEI_IOTDA, "firmwareUpgrade"): upgrades,
        (HUAWEI_IOTDA, "softwareUpgrade"): upgrades,
        (HUAWEI_IOTDA, "createDevices"): CreateDevices(),
        (HUAWEI_IOTDA, "updateDevices"): UpdateDevices(),
        (HUAWEI_IOTDA, "deleteDevices"): DeleteDevices(),
        (HUAWEI_IOTDA, "freezeDevices"): Freeze(frozen=True),
        (HUAWEI_IOTDA, "unfreezeDevices"): Freeze(frozen=False),
        (TENCENT_IOTHUB, "UpdateShadow"): shadows,
        (TENCENT_IOTHUB, "PublishMessage"): TencentMessages(gateways=gateways),
        (OCEANCONNECT, "DeviceCmd"): oc_commands,
        (TENCENT_WEDATA, "30"): WeDataScripts(commands, oc_commands, timeout),
        (TENCENT_WEDATA, "35"): WeDataScripts(commands, oc_commands, timeout),
    }
    readers: list[UplinkReader] = [
        huawei,
        HuaweiGateways(),
        oceanconnect,
        shadows,
        gateways,
        TencentOtaReports(),
    ]
    return DispatcherTable(entries=entries, readers=readers)

"""Which dispatcher carries out each task type of each API, in this build.

Types whose device side has not landed yet are :class:`~agent.sim.emulator.dispatch.Unavailable`:
the API accepts them (validation, task state, progress, stop all work) and their subtasks end as
a failure naming what is missing. Pointing an entry at a real dispatcher switches the type on.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.sim.emulator.dispatch import Dispatcher, Unavailable, UplinkReader
from agent.sim.emulator.dispatch_huawei import HuaweiCommands, HuaweiMessages, HuaweiReader
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

NOT_IN_BUILD = "not carried out by the emulator in this build"


def _missing(what: str) -> Unavailable:
    return Unavailable(f"{NOT_IN_BUILD}: {what}")


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


def build_table(*, command_timeout_s: float | None = None) -> DispatcherTable:
    """The table for this build."""
    huawei = HuaweiReader()
    oceanconnect = OceanConnectReader()
    shadows = TencentShadowService()
    timeout = command_timeout_s or 20.0
    commands = HuaweiCommands(huawei, timeout)
    oc_commands = OceanConnectCommands(oceanconnect, timeout)
    entries: dict[tuple[str, str], Dispatcher] = {
        (HUAWEI_IOTDA, "createCommands"): commands,
        (HUAWEI_IOTDA, "createMessages"): HuaweiMessages(huawei),
        (HUAWEI_IOTDA, "createAsyncCommands"): Unavailable(
            "asynchronous commands are delivered to LwM2M/CoAP devices only, not over MQTT",
            code="IOTDA.014300",
        ),
        (HUAWEI_IOTDA, "updateDeviceShadows"): HuaweiShadows(huawei, timeout),
        (HUAWEI_IOTDA, "firmwareUpgrade"): _missing("IoTDA firmware upgrade ($ota events)"),
        (HUAWEI_IOTDA, "softwareUpgrade"): _missing("IoTDA software upgrade ($ota events)"),
        (HUAWEI_IOTDA, "createDevices"): CreateDevices(),
        (HUAWEI_IOTDA, "updateDevices"): UpdateDevices(),
        (HUAWEI_IOTDA, "deleteDevices"): DeleteDevices(),
        (HUAWEI_IOTDA, "freezeDevices"): Freeze(frozen=True),
        (HUAWEI_IOTDA, "unfreezeDevices"): Freeze(frozen=False),
        (TENCENT_IOTHUB, "UpdateShadow"): shadows,
        (TENCENT_IOTHUB, "PublishMessage"): TencentMessages(),
        (OCEANCONNECT, "DeviceCmd"): oc_commands,
        (TENCENT_WEDATA, "30"): WeDataScripts(commands, oc_commands, timeout),
        (TENCENT_WEDATA, "35"): WeDataScripts(commands, oc_commands, timeout),
    }
    return DispatcherTable(entries=entries, readers=[huawei, oceanconnect, shadows])

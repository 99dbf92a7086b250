"""Which devices a fleet has, which connection serves each, and which shard runs which connection.

Connections (agents) are the unit of sharding: a gateway and its children always run in the
same process, because the children are reached through the gateway's connection.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from agent.sim.fleet.spec import PROFILES_IN_BUILD, FleetSpec


@dataclass(frozen=True, slots=True)
class SimDevice:
    """One device of the fleet (a direct device, a gateway or a child)."""

    device_id: str
    profile: str
    product_id: str
    group: str
    gateway_id: str | None
    attrs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Slot:
    """One agent: a connection and the devices it serves (itself, and children for a gateway)."""

    device: SimDevice
    children: tuple[SimDevice, ...]

    @property
    def simulated(self) -> bool:
        """Whether this build has the agent side of the device's profile."""
        return self.device.profile in PROFILES_IN_BUILD


def build_layout(spec: FleetSpec) -> list[Slot]:
    """Every connection of the fleet, in a stable order."""
    slots: list[Slot] = []
    for cohort in spec.cohorts:
        attrs = tuple(sorted(cohort.attrs.items()))
        for index in range(cohort.count):
            device_id = f"{cohort.name}-{index:05d}"
            device = SimDevice(
                device_id, cohort.profile, cohort.product_id, cohort.group_name, None, attrs
            )
            children = tuple(
                SimDevice(
                    f"{device_id}-c{child:03d}",
                    cohort.profile,
                    cohort.product_id,
                    f"{cohort.group_name}-children",
                    device_id,
                    attrs,
                )
                for child in range(cohort.children)
            )
            slots.append(Slot(device, children))
    return slots


def shard(slots: list[Slot], index: int, count: int) -> list[Slot]:
    """The connections shard ``index`` of ``count`` runs (round robin, so cohorts spread)."""
    return [slot for position, slot in enumerate(slots) if position % count == index]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` as ``(i, n)``.

    Raises:
        ValueError: not of the form ``i/n`` with ``0 <= i < n``.
    """
    left, sep, right = text.partition("/")
    index, count = int(left), int(right)
    if not sep or count < 1 or not 0 <= index < count:
        msg = f"shard {text!r} must be i/n with 0 <= i < n"
        raise ValueError(msg)
    return index, count


def registration(slots: list[Slot], spec: FleetSpec) -> dict[str, Any]:
    """What the emulator must know about these connections' devices (``POST /sim/v1/fleet``)."""
    devices: list[dict[str, Any]] = []
    groups: dict[str, list[str]] = {}
    products: dict[str, str] = {}
    for slot in slots:
        for device in (slot.device, *slot.children):
            devices.append(
                {
                    "device_id": device.device_id,
                    "platform": device.profile,
                    "product_id": device.product_id,
                    "name": device.device_id,
                    "gateway_id": device.gateway_id,
                    "secret": secret_of(device.device_id),
                    "attrs": dict(device.attrs),
                }
            )
            groups.setdefault(device.group, []).append(device.device_id)
            products.setdefault(device.product_id, device.profile)
    return {
        "products": [{"product_id": p, "platform": profile} for p, profile in products.items()],
        "devices": devices,
        "groups": [
            {"group_id": name, "name": name, "device_ids": ids} for name, ids in groups.items()
        ],
        "workflows": [w.model_dump() for w in spec.workflows],
    }


def secret_of(device_id: str) -> str:
    """The simulated device's secret (the embedded broker checks Tencent devices' signatures).

    Base64, as Tencent's device secrets are; the other platforms take any string.
    """
    return base64.b64encode(f"sim-secret-{device_id}".encode()).decode()


def seen_online(slots: list[Slot]) -> list[str]:
    """Devices the emulator sees online once the fleet is up.

    Every connection, and the children of Huawei gateways (their gateway reports them ONLINE).
    """
    children = [
        c.device_id for s in slots if s.device.profile == "huawei-iotda" for c in s.children
    ]
    return [slot.device.device_id for slot in slots] + children

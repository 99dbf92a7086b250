"""Huawei IoTDA batch tasks the task service carries out on its own registry.

``createDevices`` and ``updateDevices`` read their rows from an uploaded batch-task file
(``document_source``); ``deleteDevices``, ``freezeDevices`` and ``unfreezeDevices`` act on
their targets. Adding or deleting a gateway's child tells the gateway
(``add_sub_device_notify`` / ``delete_sub_device_notify`` on its ``events/down``).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from agent.profiles.huawei_iotda.platform import sub_device_notify
from agent.sim.emulator.dispatch import LocalContext, Verdict
from agent.sim.emulator.records import HUAWEI_IOTDA, Device, Subtask, Task


def _event_time(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")


def _device_info(device: Device) -> dict[str, Any]:
    return {
        "parent_device_id": device.gateway_id,
        "node_id": device.name,
        "device_id": device.device_id,
        "name": device.name,
        "product_id": device.product_id,
        "status": "OFFLINE",
    }


async def _notify(ctx: LocalContext, device: Device, event_type: str) -> None:
    if device.gateway_id is None:
        return
    publish = sub_device_notify(
        device.gateway_id,
        event_type,
        [_device_info(device)],
        version=int(ctx.now * 1000),
        event_time=_event_time(ctx.now),
    )
    await ctx.publish(publish)


def _row(task: Task, subtask: Subtask) -> dict[str, str]:
    rows: list[dict[str, str]] = task.extra.get("rows", [])
    return rows[subtask.seq] if subtask.seq < len(rows) else {}


class CreateDevices:
    """Register one device per file row."""

    needs_device = False

    async def run(self, task: Task, subtask: Subtask, ctx: LocalContext) -> Verdict:
        """Add the row's device unless its id is taken."""
        row = _row(task, subtask)
        if subtask.device_id in ctx.registry.devices:
            return Verdict.failed("IOTDA.014108", f"device {subtask.device_id} already exists")
        gateway = row.get("gateway_id") or None
        if gateway is not None and gateway not in ctx.registry.devices:
            return Verdict.failed("IOTDA.014000", f"gateway {gateway} does not exist")
        device = Device(
            device_id=subtask.device_id,
            platform=HUAWEI_IOTDA,
            product_id=row.get("product_id", ""),
            name=row.get("node_id") or subtask.device_id,
            gateway_id=gateway,
            secret=row.get("secret") or secrets.token_hex(16),
        )
        await ctx.registry.add_devices([device])
        await _notify(ctx, device, "add_sub_device_notify")
        return Verdict(ok=True, output={"device_id": device.device_id})


class UpdateDevices:
    """Change the name (and attributes) of one device per file row."""

    needs_device = True

    async def run(self, task: Task, subtask: Subtask, ctx: LocalContext) -> Verdict:
        """Apply the row to the device."""
        device = ctx.registry.devices[subtask.device_id]
        row = _row(task, subtask)
        if row.get("device_name"):
            device.name = row["device_name"]
        device.attrs.update({k: v for k, v in row.items() if k.startswith("attr_")})
        await ctx.registry.update_devices([device])
        return Verdict(ok=True)


class DeleteDevices:
    """Delete the target devices."""

    needs_device = True

    async def run(self, task: Task, subtask: Subtask, ctx: LocalContext) -> Verdict:
        """Remove the device; a gateway's child is announced to the gateway."""
        removed = await ctx.registry.remove_devices([subtask.device_id])
        for device in removed:
            await _notify(ctx, device, "delete_sub_device_notify")
        return Verdict(ok=True)


class Freeze:
    """Freeze (or unfreeze) the target devices: frozen devices get no downlinks."""

    needs_device = True

    def __init__(self, *, frozen: bool) -> None:
        self.frozen = frozen

    async def run(self, task: Task, subtask: Subtask, ctx: LocalContext) -> Verdict:
        """Set the device's frozen flag."""
        device = ctx.registry.devices[subtask.device_id]
        if device.frozen == self.frozen:
            state = "frozen" if self.frozen else "not frozen"
            return Verdict.failed("IOTDA.014112", f"device {device.device_id} is already {state}")
        device.frozen = self.frozen
        await ctx.registry.update_devices([device])
        return Verdict(ok=True)

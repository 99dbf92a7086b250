"""Huawei IoTDA registry APIs the tasks refer to: devices and device groups.

Answers carry the fields of the SDK's models (``AddDeviceResponse``, ``ShowDeviceResponse``,
``QueryDeviceSimplify``, ``AddDeviceGroupResponse``...). Batch-task files and OTA packages are
in :mod:`agent.sim.emulator.api_huawei_files`.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from agent.profiles.huawei_iotda.platform import sub_device_notify
from agent.sim.emulator import records as r
from agent.sim.emulator import validation as v
from agent.sim.emulator.api_huawei import fmt_time, iotda, json_body, paging
from agent.sim.emulator.context import EmulatorContext
from agent.sim.emulator.errors import json_response
from agent.sim.emulator.http import emulator_of
from agent.sim.emulator.huawei_checks import ID
from agent.sim.emulator.registry import Group
from agent.sim.errors import ApiRejected, RequestInvalid

ID_WHAT = "letters, digits, _ and -"
DEFAULT_APP = "default"


async def _notify(emulator: EmulatorContext, device: r.Device, event_type: str) -> None:
    """Tell a child's gateway that the child was added or deleted (best effort)."""
    if device.gateway_id is None or emulator.link is None:
        return
    now = emulator.clock()
    info = {
        "parent_device_id": device.gateway_id,
        "node_id": device.name,
        "device_id": device.device_id,
        "name": device.name,
        "product_id": device.product_id,
        "status": "OFFLINE",
    }
    publish = sub_device_notify(
        device.gateway_id, event_type, [info], version=int(now * 1000), event_time=fmt_time(now)
    )
    emulator.link.publish(publish).add_done_callback(lambda f: f.cancelled() or f.exception())


def device_status(emulator: EmulatorContext, device: r.Device) -> str:
    """IoTDA's status: FROZEN, ONLINE/OFFLINE as the broker and gateways say, INACTIVE if never."""
    if device.frozen:
        return "FROZEN"
    return emulator.presence.status(device)


def device_view(emulator: EmulatorContext, device: r.Device) -> dict[str, Any]:
    """A device as IoTDA lists it (``QueryDeviceSimplify``)."""
    return {
        "app_id": device.attrs.get("app_id", DEFAULT_APP),
        "device_id": device.device_id,
        "node_id": device.name,
        "gateway_id": device.gateway_id or device.device_id,
        "device_name": device.attrs.get("device_name", device.name),
        "node_type": "ENDDEVICE" if device.gateway_id else "GATEWAY",
        "description": device.attrs.get("description", ""),
        "fw_version": device.attrs.get("fw_version", ""),
        "sw_version": device.attrs.get("sw_version", ""),
        "product_id": device.product_id,
        "status": device_status(emulator, device),
    }


def device_detail(
    emulator: EmulatorContext, device: r.Device, *, with_secret: bool = False
) -> dict[str, Any]:
    """A device as AddDevice and ShowDevice answer (the secret only to AddDevice)."""
    auth: dict[str, Any] = {"auth_type": "SECRET", "secure_access": False, "timeout": 0}
    if with_secret:
        auth["secret"] = device.secret
    return {
        **device_view(emulator, device),
        "auth_info": auth,
        "create_time": fmt_time(device.created_at),
    }


async def add_device(request: web.Request) -> web.StreamResponse:
    """POST /v5/iot/{project_id}/devices."""
    emulator = emulator_of(request)
    body = await json_body(request)
    node_id = v.text(
        body, "node_id", required=True, min_len=1, max_len=64, pattern=ID, what=ID_WHAT
    )
    product_id = v.text(body, "product_id", required=True, min_len=1, max_len=64)
    device_id = v.text(body, "device_id", max_len=128, pattern=ID, what=ID_WHAT)
    gateway = v.text(body, "gateway_id", max_len=128)
    name = v.text(body, "device_name", max_len=256)
    description = v.text(body, "description", max_len=2048)
    auth: dict[str, Any] = v.get(body, "auth_info", dict) or {}
    v.one_of(auth, "auth_type", ("SECRET",), required=False)  # certificates: not emulated
    secret = v.text(auth, "secret", min_len=8, max_len=32, pattern=r"[A-Za-z0-9_]+",
                    what="letters, digits and _")  # fmt: skip
    device_id = device_id or f"{product_id}_{node_id}"
    if device_id in emulator.registry.devices:
        raise ApiRejected(409, "IOTDA.014108", f"device {device_id} already exists")
    if gateway is not None and gateway != device_id and gateway not in emulator.registry.devices:
        raise RequestInvalid("gateway_id", "value", f"no device {gateway!r}")
    device = r.Device(
        device_id=device_id,
        platform=r.HUAWEI_IOTDA,
        product_id=product_id or "",
        name=node_id or "",
        gateway_id=gateway if gateway and gateway != device_id else None,
        secret=secret or secrets.token_hex(16),
        attrs={k: val for k, val in (("device_name", name), ("description", description)) if val},
        created_at=emulator.clock(),
    )
    await emulator.registry.add_devices([device])
    await _notify(emulator, device, "add_sub_device_notify")
    return json_response(device_detail(emulator, device, with_secret=True), status=201)


def _device(emulator: EmulatorContext, request: web.Request) -> r.Device:
    device = emulator.registry.devices.get(request.match_info["device_id"])
    if device is None:
        raise ApiRejected(404, "IOTDA.014000", "the device does not exist")
    return device


async def list_devices(request: web.Request) -> web.StreamResponse:
    """GET .../devices?product_id=&gateway_id=&node_id=&device_name=&limit=&offset=."""
    emulator = emulator_of(request)
    limit, offset = paging(request)
    query = request.query
    wanted = {k: query[k] for k in ("product_id", "gateway_id", "node_id") if k in query}
    name = query.get("device_name")
    found = [
        d
        for d in emulator.registry.devices.values()
        if d.platform == r.HUAWEI_IOTDA
        and all(
            {"product_id": d.product_id, "gateway_id": d.gateway_id, "node_id": d.name}[k] == val
            for k, val in wanted.items()
        )
        and (name is None or d.attrs.get("device_name", d.name) == name)
    ]
    page = found[offset : offset + limit]
    return json_response(
        {
            "devices": [device_view(emulator, d) for d in page],
            "page": {"count": len(found), "marker": page[-1].device_id if page else None},
        }
    )


async def show_device(request: web.Request) -> web.StreamResponse:
    """GET /v5/iot/{project_id}/devices/{device_id}."""
    emulator = emulator_of(request)
    return json_response(device_detail(emulator, _device(emulator, request)))


async def delete_device(request: web.Request) -> web.StreamResponse:
    """DELETE /v5/iot/{project_id}/devices/{device_id}."""
    emulator = emulator_of(request)
    device = _device(emulator, request)
    await emulator.registry.remove_devices([device.device_id])
    await _notify(emulator, device, "delete_sub_device_notify")
    return web.Response(status=204)


async def freeze(request: web.Request) -> web.StreamResponse:
    """POST /v5/iot/{project_id}/devices/{device_id}/freeze (or /unfreeze)."""
    emulator = emulator_of(request)
    device = _device(emulator, request)
    device.frozen = request.path.endswith("/freeze")
    await emulator.registry.update_devices([device])
    return web.Response(status=204)


def group_view(group: Group) -> dict[str, Any]:
    """A group as IoTDA shows it (static groups only)."""
    return {
        "group_id": group.group_id,
        "name": group.name,
        "description": group.description,
        "super_group_id": None,
        "group_type": "STATIC",
    }


def _group(emulator: EmulatorContext, request: web.Request) -> Group:
    group = emulator.registry.groups.get(request.match_info["group_id"])
    if group is None:
        raise ApiRejected(404, "IOTDA.014000", "the group does not exist")
    return group


async def add_group(request: web.Request) -> web.StreamResponse:
    """POST /v5/iot/{project_id}/device-group."""
    emulator = emulator_of(request)
    body = await json_body(request)
    name = v.text(body, "name", required=True, min_len=1, max_len=64)
    description = v.text(body, "description", max_len=64) or ""
    v.one_of(body, "group_type", ("STATIC",), required=False)  # dynamic groups: not emulated
    if v.text(body, "super_group_id") is not None:
        raise RequestInvalid("super_group_id", "value", "sub-groups are not emulated")
    if emulator.registry.group_by_name(name or "") is not None:
        raise ApiRejected(409, "IOTDA.014111", f"a group named {name!r} exists")
    group = Group(
        group_id=secrets.token_hex(12),
        name=name or "",
        platform=r.HUAWEI_IOTDA,
        description=description,
    )
    await emulator.registry.put_group(group)
    return json_response(group_view(group), status=201)


async def show_group(request: web.Request) -> web.StreamResponse:
    """GET /v5/iot/{project_id}/device-group/{group_id}."""
    return json_response(group_view(_group(emulator_of(request), request)))


async def delete_group(request: web.Request) -> web.StreamResponse:
    """DELETE /v5/iot/{project_id}/device-group/{group_id} (its devices stay)."""
    emulator = emulator_of(request)
    await emulator.registry.remove_group(_group(emulator, request).group_id)
    return web.Response(status=204)


async def group_action(request: web.Request) -> web.StreamResponse:
    """POST /v5/iot/{project_id}/device-group/{group_id}/action?action_id=addDevice&device_id=."""
    emulator = emulator_of(request)
    group = _group(emulator, request)
    action = v.one_of(
        dict(request.query), "action_id", ("addDevice", "removeDevice"), required=True
    )
    device_id = v.text(dict(request.query), "device_id", required=True, min_len=1)
    if device_id not in emulator.registry.devices:
        raise RequestInvalid("device_id", "value", f"no device {device_id!r}")
    members = [d for d in group.device_ids if d != device_id]
    group.device_ids = [*members, device_id] if action == "addDevice" else members
    await emulator.registry.put_group(group)
    return web.Response(status=200)


async def group_devices(request: web.Request) -> web.StreamResponse:
    """GET /v5/iot/{project_id}/device-group/{group_id}/devices?limit=&offset=."""
    emulator = emulator_of(request)
    group = _group(emulator, request)
    limit, offset = paging(request)
    page = group.device_ids[offset : offset + limit]
    devices = [emulator.registry.devices[d] for d in page if d in emulator.registry.devices]
    return json_response(
        {
            "devices": [
                {
                    "device_id": d.device_id,
                    "node_id": d.name,
                    "device_name": d.attrs.get("device_name", d.name),
                    "product_id": d.product_id,
                }
                for d in devices
            ],
            "page": {"count": len(group.device_ids), "marker": page[-1] if page else None},
        }
    )


async def list_groups(request: web.Request) -> web.StreamResponse:
    """GET /v5/iot/{project_id}/device-group?limit=&offset=."""
    emulator = emulator_of(request)
    limit, offset = paging(request)
    groups = list(emulator.registry.groups.values())
    page = groups[offset : offset + limit]
    return json_response(
        {
            "device_groups": [group_view(g) for g in page],
            "page": {"count": len(groups), "marker": page[-1].group_id if page else None},
        }
    )


def register(app: web.Application) -> None:
    """Add the registry routes."""
    base = "/v5/iot/{project_id}"
    app.router.add_post(base + "/devices", iotda(add_device))
    app.router.add_get(base + "/devices", iotda(list_devices))
    app.router.add_get(base + "/devices/{device_id}", iotda(show_device))
    app.router.add_delete(base + "/devices/{device_id}", iotda(delete_device))
    app.router.add_post(base + "/devices/{device_id}/freeze", iotda(freeze))
    app.router.add_post(base + "/devices/{device_id}/unfreeze", iotda(freeze))
    app.router.add_post(base + "/device-group", iotda(add_group))
    app.router.add_get(base + "/device-group", iotda(list_groups))
    app.router.add_get(base + "/device-group/{group_id}", iotda(show_group))
    app.router.add_delete(base + "/device-group/{group_id}", iotda(delete_group))
    app.router.add_post(base + "/device-group/{group_id}/action", iotda(group_action))
    app.router.add_get(base + "/device-group/{group_id}/devices", iotda(group_devices))

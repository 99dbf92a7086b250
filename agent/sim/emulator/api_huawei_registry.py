"""Huawei IoTDA registry APIs the tasks refer to: devices, groups, batch-task files, OTA packages.

Shapes follow IoTDA where the seeds name a concept (device ids, group ids, ``document_source``,
``package_id``); packages are uploaded as the request body and served back over loopback HTTP
to holders of a download token (``Authorization: Bearer``), as the device side downloads them.
"""

from __future__ import annotations

import csv
import io
import secrets
from dataclasses import asdict
from typing import Any

from aiohttp import web

from agent.profiles.huawei_iotda.platform import sub_device_notify
from agent.sim.emulator import records as r
from agent.sim.emulator import validation as v
from agent.sim.emulator.api_huawei import fmt_time, iotda, json_body
from agent.sim.emulator.http import emulator_of
from agent.sim.emulator.huawei_checks import ID
from agent.sim.emulator.registry import Group
from agent.sim.emulator.service import Emulator
from agent.sim.errors import ApiRejected, RequestInvalid

ID_WHAT = "letters, digits, _ and -"


async def _notify(emulator: Emulator, device: r.Device, event_type: str) -> None:
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


def device_view(emulator: Emulator, device: r.Device) -> dict[str, Any]:
    """A device as IoTDA shows it (the secret is never shown); ONLINE only while connected."""
    return {
        "device_id": device.device_id,
        "node_id": device.name,
        "product_id": device.product_id,
        "gateway_id": device.gateway_id or device.device_id,
        "status": "FROZEN" if device.frozen else emulator.presence.status(device),
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
    auth: dict[str, Any] = v.get(body, "auth_info", dict) or {}
    secret = v.text(auth, "secret", max_len=64)
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
    )
    await emulator.registry.add_devices([device])
    await _notify(emulator, device, "add_sub_device_notify")
    return web.json_response(device_view(emulator, device), status=201)


def _device(emulator: Emulator, request: web.Request) -> r.Device:
    device = emulator.registry.devices.get(request.match_info["device_id"])
    if device is None:
        raise ApiRejected(404, "IOTDA.014000", "the device does not exist")
    return device


async def list_devices(request: web.Request) -> web.StreamResponse:
    """GET /v5/iot/{project_id}/devices?product_id=&gateway_id=."""
    emulator = emulator_of(request)
    product = request.query.get("product_id")
    gateway = request.query.get("gateway_id")
    devices = [
        device_view(emulator, d)
        for d in emulator.registry.devices.values()
        if d.platform == r.HUAWEI_IOTDA
        and (product is None or d.product_id == product)
        and (gateway is None or d.gateway_id == gateway)
    ]
    return web.json_response({"devices": devices, "page": {"count": len(devices)}})


async def show_device(request: web.Request) -> web.StreamResponse:
    """GET /v5/iot/{project_id}/devices/{device_id}."""
    emulator = emulator_of(request)
    return web.json_response(device_view(emulator, _device(emulator, request)))


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


async def add_group(request: web.Request) -> web.StreamResponse:
    """POST /v5/iot/{project_id}/device-group."""
    emulator = emulator_of(request)
    body = await json_body(request)
    name = v.text(body, "name", required=True, min_len=1, max_len=64)
    group = Group(group_id=secrets.token_hex(12), name=name, platform=r.HUAWEI_IOTDA)
    await emulator.registry.put_group(group)
    return web.json_response({"group_id": group.group_id, "name": group.name}, status=201)


async def group_action(request: web.Request) -> web.StreamResponse:
    """POST /v5/iot/{project_id}/device-group/{group_id}/action?action_id=addDevice&device_id=."""
    emulator = emulator_of(request)
    group = emulator.registry.groups.get(request.match_info["group_id"])
    if group is None:
        raise ApiRejected(404, "IOTDA.014000", "the group does not exist")
    action = v.one_of(
        dict(request.query), "action_id", ("addDevice", "removeDevice"), required=True
    )
    device_id = v.text(dict(request.query), "device_id", required=True, min_len=1)
    if device_id not in emulator.registry.devices:
        raise RequestInvalid("device_id", "value", f"no device {device_id!r}")
    members = [d for d in group.device_ids if d != device_id]
    group.device_ids = [*members, device_id] if action == "addDevice" else members
    await emulator.registry.put_group(group)
    return web.json_response({"group_id": group.group_id, "device_count": len(group.device_ids)})


async def list_groups(request: web.Request) -> web.StreamResponse:
    """GET /v5/iot/{project_id}/device-group."""
    emulator = emulator_of(request)
    groups = [
        {"group_id": g.group_id, "name": g.name, "device_count": len(g.device_ids)}
        for g in emulator.registry.groups.values()
    ]
    return web.json_response({"device_groups": groups, "page": {"count": len(groups)}})


async def upload_file(request: web.Request) -> web.StreamResponse:
    """POST /v5/iot/{project_id}/batchtask-files: a CSV file with a header row."""
    emulator = emulator_of(request)
    raw = await request.read()
    try:
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RequestInvalid("file", "malformed", f"not a UTF-8 CSV file: {exc}") from exc
    if not rows:
        raise RequestInvalid("file", "value", "the file has no rows")
    if len(rows) > emulator.settings.max_targets:
        raise RequestInvalid("file", "value", f"at most {emulator.settings.max_targets} rows")
    clean = [{str(k).strip(): (val or "").strip() for k, val in row.items() if k} for row in rows]
    file_id = await emulator.registry.put_file(clean)
    return web.json_response({"file_id": file_id, "rows": len(clean)}, status=201)


async def upload_package(request: web.Request) -> web.StreamResponse:
    """POST /v5/iot/{project_id}/ota-upgrades/packages?name=&version=&package_type= (body: file).

    ``location=obs`` keeps it "in OBS": devices then get ``*_upgrade_v2`` events with a
    pre-signed URL instead of an ``access_token``.
    """
    emulator = emulator_of(request)
    query = dict(request.query)
    version = v.text(query, "version", required=True, min_len=1, max_len=256)
    kind = v.one_of(query, "package_type", ("softwarePackage", "firmwarePackage"), required=True)
    name = v.text(query, "name", max_len=128) or "package.bin"
    location = v.one_of(query, "location", ("iotda", "obs"), required=False) or "iotda"
    data = await request.read()
    if not data:
        raise RequestInvalid("file", "missing", "the request body holds no package")
    package = await emulator.registry.add_package(
        data, name=name, version=version, package_type=kind, location=location
    )
    view = {k: val for k, val in asdict(package).items() if k != "path"}
    return web.json_response(
        {**view, "sign": package.sha256, "file_size": package.size}, status=201
    )


async def package_token(request: web.Request) -> web.StreamResponse:
    """POST /v5/iot/{project_id}/ota-upgrades/packages/{package_id}/tokens: a download token."""
    emulator = emulator_of(request)
    package_id = request.match_info["package_id"]
    if package_id not in emulator.registry.packages:
        raise ApiRejected(404, "IOTDA.014000", "the package does not exist")
    token = emulator.registry.issue_token(package_id, emulator.clock())
    url = f"{emulator.url}/ota/packages/{package_id}"
    return web.json_response({"access_token": token, "url": url, "expires": 86400}, status=201)


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
    app.router.add_post(base + "/device-group/{group_id}/action", iotda(group_action))
    app.router.add_post(base + "/batchtask-files", iotda(upload_file))
    app.router.add_post(base + "/ota-upgrades/packages", iotda(upload_package))
    app.router.add_post(base + "/ota-upgrades/packages/{package_id}/tokens", iotda(package_token))

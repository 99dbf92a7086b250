"""Tencent IoT Hub registry actions (API 3.0, 2018-06-14): products and devices.

``CreateProduct``, ``DescribeProduct(s)``, ``DeleteProduct``, ``CreateDevice``,
``DescribeDevice(s)`` and ``DeleteDevice``, answered with the fields of the SDK's models (an
unknown field would make the SDK warn). Error codes are those the SDK lists for IoT Hub.
A device's PSK is base64, as the cloud issues it (the device side decodes it for its HMAC key).
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.sim.emulator import records as r
from agent.sim.emulator import validation as v
from agent.sim.emulator.api_tencent import NO_PRODUCT, v3_response
from agent.sim.emulator.context import EmulatorContext
from agent.sim.errors import ApiRejected, RequestInvalid

DEVICE_NAME = r"[A-Za-z0-9_\-:.@]+"
NO_DEVICE = "ResourceNotFound.DeviceNotExist"
_PROPERTIES = (
    "ProductDescription", "EncryptionType", "Region", "ProductType", "Format", "Platform",
    "Appeui", "ModelId", "ModelName", "ProductKey", "RegisterType", "ProductSecret",
    "RegisterLimit",
)  # fmt: skip
_NUMERIC_PROPERTIES = ("ProductType", "RegisterType", "RegisterLimit")


def _properties(body: dict[str, Any]) -> dict[str, Any]:
    given: dict[str, Any] = v.get(body, "ProductProperties", dict) or {}
    unknown = sorted(set(given) - set(_PROPERTIES))
    if unknown:
        raise RequestInvalid("ProductProperties", "value", f"unknown fields {unknown}")
    props: dict[str, Any] = {
        "ProductDescription": "",
        "EncryptionType": "2",  # the emulator's devices sign with their PSK
        "Region": "gz",
        "ProductType": 0,
        "Format": "json",
        "Platform": "0",
        "ModelId": "-1",
        "RegisterType": 0,
        "RegisterLimit": 0,
    }
    for key in _PROPERTIES:
        if key in given:
            if key in _NUMERIC_PROPERTIES:
                props[key] = v.integer(given, key, lo=0, hi=10**6, numeric_string=True)
            else:
                props[key] = v.text(given, key, max_len=256)
    v.one_of(props, "EncryptionType", ("1", "2"), required=True)
    return props


def _product(emulator: EmulatorContext, product_id: str | None) -> dict[str, Any]:
    product = emulator.registry.products.get(product_id or "")
    if product is None:
        raise ApiRejected(200, NO_PRODUCT, f"product {product_id} does not exist")
    return product


def _product_info(product: dict[str, Any]) -> dict[str, Any]:
    return {
        "ProductId": product["product_id"],
        "ProductName": product.get("name", ""),
        "ProductMetadata": {"CreationDate": int(product.get("created_at", 0))},
        "ProductProperties": product.get("properties") or _properties({}),
    }


async def create_product(
    emulator: EmulatorContext, account: str, body: dict[str, Any]
) -> web.Response:
    """CreateProduct: ``ProductName`` and optional ``ProductProperties``."""
    name = v.text(body, "ProductName", required=True, min_len=1, max_len=32)
    props = _properties(body)
    if any(
        p.get("name") == name and p.get("platform") == r.TENCENT_IOTHUB
        for p in emulator.registry.products.values()
    ):
        raise ApiRejected(
            200, "InvalidParameterValue.ProductAlreadyExist", f"product {name} exists"
        )
    product_id = uuid.uuid4().hex[:10].upper()
    await emulator.registry.add_product(
        product_id, r.TENCENT_IOTHUB, name or "", properties=props, created_at=emulator.clock()
    )
    return v3_response({"ProductId": product_id, "ProductName": name, "ProductProperties": props})


async def describe_product(
    emulator: EmulatorContext, account: str, body: dict[str, Any]
) -> web.Response:
    """DescribeProduct."""
    product = _product(emulator, v.text(body, "ProductId", required=True, min_len=1))
    return v3_response(_product_info(product))


async def describe_products(
    emulator: EmulatorContext, account: str, body: dict[str, Any]
) -> web.Response:
    """DescribeProducts: a page of products."""
    offset = v.integer(body, "Offset", lo=0, hi=10**9, numeric_string=True) or 0
    limit = v.integer(body, "Limit", lo=1, hi=250, numeric_string=True) or 20
    products = list(emulator.registry.products.values())
    page = [_product_info(p) for p in products[offset : offset + limit]]
    return v3_response({"TotalCount": len(products), "Products": page})


async def delete_product(
    emulator: EmulatorContext, account: str, body: dict[str, Any]
) -> web.Response:
    """DeleteProduct (only once it has no devices)."""
    product = _product(emulator, v.text(body, "ProductId", required=True, min_len=1))
    if emulator.registry.names_of_product(product["product_id"]):
        raise ApiRejected(
            200, "UnauthorizedOperation.DevicesExistUnderProduct", "the product has devices"
        )
    await emulator.registry.remove_product(product["product_id"])
    return v3_response({})


async def create_device(
    emulator: EmulatorContext, account: str, body: dict[str, Any]
) -> web.Response:
    """CreateDevice: answers the device's base64 PSK."""
    product_id = v.text(body, "ProductId", required=True, min_len=1)
    name = v.text(body, "DeviceName", required=True, min_len=1, max_len=48,
                  pattern=DEVICE_NAME, what="letters, digits and _-:.@")  # fmt: skip
    defined = v.text(body, "DefinedPsk", min_len=1, max_len=64)
    _product(emulator, product_id)
    if emulator.registry.by_name(product_id or "", name or "") is not None:
        raise ApiRejected(200, "InvalidParameterValue.DeviceAlreadyExist", f"device {name} exists")
    if defined is not None:
        try:
            base64.b64decode(defined, validate=True)
        except ValueError as exc:
            raise RequestInvalid("DefinedPsk", "value", "must be base64") from exc
    psk = defined or base64.b64encode(secrets.token_bytes(16)).decode()
    device = r.Device(
        device_id=f"{product_id}{name}", platform=r.TENCENT_IOTHUB, product_id=product_id or "",
        name=name or "", secret=psk, created_at=emulator.clock(),
    )  # fmt: skip
    await emulator.registry.add_devices([device])
    return v3_response({"DeviceName": name, "DevicePsk": psk, "DeviceCert": "",
                        "DevicePrivateKey": ""})  # fmt: skip


def _device_info(emulator: EmulatorContext, device: r.Device) -> dict[str, Any]:
    online = emulator.registry.connected.get(device.device_id, False)
    return {
        "DeviceName": device.name,
        "Online": 1 if online else 0,
        "LoginTime": 0,
        "Version": "",
        "DeviceCert": "",
        "DevicePsk": device.secret,
        "Tags": [],
        "DeviceType": 0,
        "CreateTime": int(device.created_at),
        "EnableState": 0 if device.frozen else 1,
        "LastUpdateTime": int(device.created_at),
    }


def _device(emulator: EmulatorContext, body: dict[str, Any], product_key: str) -> r.Device:
    product_id = v.text(body, product_key, required=True, min_len=1)
    name = v.text(body, "DeviceName", required=True, min_len=1)
    _product(emulator, product_id)
    device = emulator.registry.by_name(product_id or "", name or "")
    if device is None:
        raise ApiRejected(200, NO_DEVICE, f"device {name} does not exist")
    return device


async def describe_device(
    emulator: EmulatorContext, account: str, body: dict[str, Any]
) -> web.Response:
    """DescribeDevice (the request spells ``ProductID``)."""
    return v3_response(_device_info(emulator, _device(emulator, body, "ProductID")))


async def describe_devices(
    emulator: EmulatorContext, account: str, body: dict[str, Any]
) -> web.Response:
    """DescribeDevices: a page of a product's devices, by name."""
    product = _product(emulator, v.text(body, "ProductId", required=True, min_len=1))
    offset = v.integer(body, "Offset", lo=0, hi=10**9, numeric_string=True) or 0
    limit = v.integer(body, "Limit", lo=10, hi=250, numeric_string=True) or 10
    wanted = v.text(body, "DeviceName")
    ids = [d for n, d in emulator.registry.names_of_product(product["product_id"])
           if wanted is None or n == wanted]  # fmt: skip
    page = [_device_info(emulator, emulator.registry.devices[i]) for i in ids[offset:][:limit]]
    return v3_response({"TotalCount": len(ids), "Devices": page})


async def delete_device(
    emulator: EmulatorContext, account: str, body: dict[str, Any]
) -> web.Response:
    """DeleteDevice."""
    device = _device(emulator, body, "ProductId")
    await emulator.registry.remove_devices([device.device_id])
    return v3_response({})


ACTIONS: dict[str, Callable[[EmulatorContext, str, dict[str, Any]], Any]] = {
    "CreateProduct": create_product,
    "DescribeProduct": describe_product,
    "DescribeProducts": describe_products,
    "DeleteProduct": delete_product,
    "CreateDevice": create_device,
    "DescribeDevice": describe_device,
    "DescribeDevices": describe_devices,
    "DeleteDevice": delete_device,
}

"""Tencent IoT Hub as ``tencentcloud-sdk-python-iotcloud`` sees the emulator.

Every call goes through ``IotcloudClient``: TC3-signed JSON POSTs (the default), GET requests
and the older ``HmacSHA256`` signature; tasks over a fleet of real agents, the product and
device registry, and each documented error code as ``TencentCloudSDKException``. Unknown
fields in an answer make the SDK warn, and warnings fail these tests: answers must match the
SDK's models.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
    TencentCloudSDKException,
)
from tencentcloud.iotcloud.v20180614 import models

from agent.sim.emulator.service import Emulator
from agent.sim.mosquitto import Mosquitto
from tests.support.sdk import TENCENT_ID, TENCENT_KEY, iotcloud_client, run
from tests.support.sim import emulator, fleet

CREDENTIALS: dict[str, Any] = {"tencent_secret_id": TENCENT_ID, "tencent_secret_key": TENCENT_KEY}
PRODUCT = "SDKPROD001"
CLIENTS = [
    ("POST", "TC3-HMAC-SHA256"),
    ("GET", "TC3-HMAC-SHA256"),
    ("POST", "HmacSHA256"),
    ("GET", "HmacSHA256"),
    ("POST", "HmacSHA1"),
]


def _request(cls: type[Any], **fields: Any) -> Any:
    request = cls()
    request.from_json_string(json.dumps(fields))
    return request


def _publish(name_filter: str, *, schedule: int = 0) -> Any:
    return _request(
        models.CreateTaskRequest,
        TaskType="PublishMessage",
        ProductId=PRODUCT,
        DeviceNameFilter=name_filter,
        ScheduleTimeInSeconds=schedule,
        Tasks={"PublishMessageTask": {"Topic": "data", "Payload": "hello"}},
    )


async def _refused(call_: Any, request: Any) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as caught:
        await run(call_, request)
    return caught.value


async def _until_done(client: Any, task_id: str) -> Any:
    deadline = time.monotonic() + 30
    while True:
        described = await run(client.DescribeTask, _request(models.DescribeTaskRequest, Id=task_id))
        if described.Status >= 3:
            return described
        assert time.monotonic() < deadline, f"task {task_id} still {described.Status}"
        await asyncio.sleep(0.05)


@pytest.mark.broker
@pytest.mark.parametrize(("method", "sign_method"), CLIENTS, ids=[f"{m}-{s}" for m, s in CLIENTS])
async def test_tasks_over_a_fleet_in_every_wire_form(
    tmp_path: Path, broker: Mosquitto, method: str, sign_method: str
) -> None:
    """CreateTask, DescribeTask(s) and CancelTask over real agents, in each signing form."""
    async with (
        emulator(tmp_path, broker_url=broker.url, **CREDENTIALS) as emu,
        fleet(
            emu,
            broker.port,
            tmp_path,
            count=3,
            handlers=[],
            profile="tencent-iothub",
            product_id=PRODUCT,
        ) as (_, prefix),
    ):
        client = iotcloud_client(emu, method=method, sign_method=sign_method)
        created = await run(client.CreateTask, _publish(f"^{prefix}"))
        done = await _until_done(client, created.TaskId)
        assert (done.Status, done.AllDeviceCnt, done.DoneDeviceCnt) == (3, 3, 3)
        assert done.ProductId == PRODUCT
        later = await run(
            client.CreateTask, _publish(f"^{prefix}", schedule=int(time.time()) + 3600)
        )
        await run(client.CancelTask, _request(models.CancelTaskRequest, Id=later.TaskId))
        cancelled = await _until_done(client, later.TaskId)
        assert cancelled.Status == 5
        listed = await run(client.DescribeTasks, _request(models.DescribeTasksRequest, Limit=10))
        assert listed.TotalCount == 2
        assert {t.Id for t in listed.Tasks} == {created.TaskId, later.TaskId}
        finished = await _refused(
            client.CancelTask, _request(models.CancelTaskRequest, Id=later.TaskId)
        )
        assert finished.get_code() == "FailedOperation.TaskFinished"


async def test_products_and_devices_through_the_sdk(tmp_path: Path) -> None:
    """The registry actions: created, described, listed and deleted, with the SDK's fields."""
    async with emulator(tmp_path, **CREDENTIALS) as emu:
        client = iotcloud_client(emu)
        product = await run(
            client.CreateProduct,
            _request(
                models.CreateProductRequest,
                ProductName="meters",
                ProductProperties={"ProductDescription": "water meters", "EncryptionType": "2"},
            ),
        )
        assert product.ProductProperties.ProductDescription == "water meters"
        assert product.ProductProperties.EncryptionType == "2"
        pid = product.ProductId
        described = await run(
            client.DescribeProduct, _request(models.DescribeProductRequest, ProductId=pid)
        )
        assert described.ProductName == "meters"
        products = await run(
            client.DescribeProducts, _request(models.DescribeProductsRequest, Limit=10)
        )
        assert [p.ProductId for p in products.Products] == [pid]
        device = await run(
            client.CreateDevice,
            _request(models.CreateDeviceRequest, ProductId=pid, DeviceName="m1"),
        )
        assert len(base64.b64decode(device.DevicePsk, validate=True)) == 16
        shown = await run(
            client.DescribeDevice,
            _request(models.DescribeDeviceRequest, ProductID=pid, DeviceName="m1"),
        )
        assert (shown.DeviceName, shown.Online, shown.DevicePsk) == ("m1", 0, device.DevicePsk)
        listed = await run(
            client.DescribeDevices, _request(models.DescribeDevicesRequest, ProductId=pid)
        )
        assert [d.DeviceName for d in listed.Devices] == ["m1"]
        in_use = await _refused(
            client.DeleteProduct, _request(models.DeleteProductRequest, ProductId=pid)
        )
        assert in_use.get_code() == "UnauthorizedOperation.DevicesExistUnderProduct"
        await run(
            client.DeleteDevice,
            _request(models.DeleteDeviceRequest, ProductId=pid, DeviceName="m1"),
        )
        await run(client.DeleteProduct, _request(models.DeleteProductRequest, ProductId=pid))
        gone = await _refused(
            client.DescribeProduct, _request(models.DescribeProductRequest, ProductId=pid)
        )
        assert gone.get_code() == "ResourceNotFound.ProductNotExist"


async def _product(emu: Emulator) -> None:
    client = iotcloud_client(emu)
    await run(client.CreateProduct, _request(models.CreateProductRequest, ProductName="p"))
    pid = next(iter(emu.registry.products))
    emu.registry.products[PRODUCT] = {**emu.registry.products.pop(pid), "product_id": PRODUCT}
    await run(
        client.CreateDevice,
        _request(models.CreateDeviceRequest, ProductId=PRODUCT, DeviceName="d1"),
    )


async def test_every_documented_error_code_reaches_the_sdk(tmp_path: Path) -> None:
    """Each error the emulator documents for IoT Hub arrives as TencentCloudSDKException."""
    async with emulator(tmp_path, tencent_task_limit=1, **CREDENTIALS) as emu:
        await _product(emu)
        client = iotcloud_client(emu)
        legacy = iotcloud_client(emu, sign_method="HmacSHA256")
        flat = _request(models.CreateTaskRequest, TaskType="PublishMessage", ProductId=PRODUCT)
        cases: list[tuple[Any, Any, str]] = [
            (client.CreateTask, _publish("(a)\\1"), "InvalidParameterValue"),
            (client.CreateTask, flat, "MissingParameter"),
            (
                client.CreateTask,
                _request(
                    models.CreateTaskRequest,
                    TaskType="PublishMessage",
                    ProductId=PRODUCT,
                    DeviceNameFilter="d",
                    ScheduleTimeInSeconds="soon",
                    Tasks={},
                ),
                "InvalidParameter",
            ),
            (
                client.CreateTask,
                _request(
                    models.CreateTaskRequest,
                    **{**json.loads(_publish("d").to_json_string()), "ProductId": "NOPRODUCT"},
                ),
                "ResourceNotFound.ProductNotExist",
            ),
            (
                client.DescribeTask,
                _request(models.DescribeTaskRequest, Id="nope"),
                "ResourceNotFound.TaskNotExist",
            ),
            (
                client.CreateDevice,
                _request(models.CreateDeviceRequest, ProductId=PRODUCT, DeviceName="d1"),
                "InvalidParameterValue.DeviceAlreadyExist",
            ),
            (
                client.DescribeDevice,
                _request(models.DescribeDeviceRequest, ProductID=PRODUCT, DeviceName="d9"),
                "ResourceNotFound.DeviceNotExist",
            ),
            (
                client.CreateProduct,
                _request(models.CreateProductRequest, ProductName="p"),
                "InvalidParameterValue.ProductAlreadyExist",
            ),
            (client.DescribeFirmware, _request(models.DescribeFirmwareRequest), "InvalidAction"),
            (
                iotcloud_client(emu, secret_key="wrong").DescribeTasks,
                models.DescribeTasksRequest(),
                "AuthFailure.SignatureFailure",
            ),
            (
                iotcloud_client(emu, secret_id="AKIDother").DescribeTasks,
                models.DescribeTasksRequest(),
                "AuthFailure.SecretIdNotFound",
            ),
            (
                iotcloud_client(emu, secret_key="wrong", sign_method="HmacSHA256").DescribeTasks,
                models.DescribeTasksRequest(),
                "AuthFailure.SignatureFailure",
            ),
            (
                client.CreateTask,
                _request(
                    models.CreateTaskRequest,
                    TaskType="PublishMessage",
                    ProductId=PRODUCT,
                    DeviceNameFilter="d",
                    ScheduleTimeInSeconds=0,
                    Tasks={"PublishMessageTask": {"Topic": "t", "Payload": "x" * (9 << 20)}},
                ),
                "RequestSizeLimitExceeded",
            ),
        ]
        for call_, request, code in cases:
            refused = await _refused(call_, request)
            assert refused.get_code() == code, (code, refused)
            assert refused.get_request_id()
        await run(legacy.CreateTask, _publish("d1", schedule=int(time.time()) + 3600))
        limited = await _refused(client.CreateTask, _publish("d1"))
        assert limited.get_code() == "LimitExceeded.PengingOrProcessingTasksExceedLimit"
        assert len(emu.engine.tasks) == 1  # refused requests created nothing

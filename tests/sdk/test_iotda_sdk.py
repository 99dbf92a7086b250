"""Huawei IoTDA as ``huaweicloudsdkiotda`` sees the emulator: every call parses or raises.

The emulator is driven only through the official SDK (signed with SDK-HMAC-SHA256): batch
tasks over a fleet of real agents, the registry, batch-task files, OTA packages from an
"OBS bucket" directory, stop and retry, and each documented error code as the SDK's own
``ClientRequestException``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.formdata import FormFile
from huaweicloudsdkiotda.v5 import (
    AddDevice,
    AddDeviceGroupDTO,
    AddDeviceGroupRequest,
    AddDeviceRequest,
    AuthInfo,
    BatchTargets,
    CreateBatchTask,
    CreateBatchTaskRequest,
    CreateOrDeleteDeviceInGroupRequest,
    CreateOtaPackage,
    CreateOtaPackageRequest,
    DeleteBatchTaskFileRequest,
    DeleteBatchTaskRequest,
    DeleteDeviceGroupRequest,
    DeleteDeviceRequest,
    DeleteOtaPackageRequest,
    FileLocation,
    FreezeDeviceRequest,
    ListBatchTaskFilesRequest,
    ListBatchTasksRequest,
    ListDeviceGroupsRequest,
    ListDevicesRequest,
    ListOtaPackageInfoRequest,
    ListProductsRequest,
    ObsLocation,
    RetryBatchTaskRequest,
    ShowBatchTaskRequest,
    ShowDeviceGroupRequest,
    ShowDeviceRequest,
    ShowDevicesInGroupRequest,
    ShowOtaPackageRequest,
    StopBatchTaskRequest,
    UnfreezeDeviceRequest,
    UpdateDevice,
    UpdateDeviceRequest,
    UploadBatchTaskFileRequest,
    UploadBatchTaskFileRequestBody,
)
from openpyxl import Workbook

from agent.sim.emulator.service import Emulator
from agent.sim.fleet.spec import HandlerSpec, UpgradeSpec
from agent.sim.mosquitto import Mosquitto
from tests.support.sdk import HUAWEI_AK, HUAWEI_SK, iotda_client, run
from tests.support.sim import call, emulator, fleet

CREDENTIALS: dict[str, Any] = {"huawei_ak": HUAWEI_AK, "huawei_sk": HUAWEI_SK}
PING = HandlerSpec(service_id="Maintenance", command_name="PING")
COMMAND = {"service_id": "Maintenance", "command_name": "PING", "paras": {"n": 1}}
SPARE_SECRET = "spare_secret_1"
FINISHED = ("Success", "Fail", "PartialSuccess", "Stopped")


def _later(offset_s: float = 3600) -> str:
    return datetime.fromtimestamp(time.time() + offset_s, UTC).strftime("%Y%m%dT%H%M%SZ")


async def _until(client: Any, task_id: str, done: Callable[[Any], bool], what: str) -> Any:
    """ShowBatchTask until ``done`` holds (bounded)."""
    deadline = time.monotonic() + 30
    while True:
        shown = await run(client.show_batch_task, ShowBatchTaskRequest(task_id=task_id, limit=50))
        if done(shown):
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {shown.batchtask}")
        await asyncio.sleep(0.05)


async def _refused(call_: Callable[..., Any], request: Any) -> ClientRequestException:
    with pytest.raises(ClientRequestException) as caught:
        await run(call_, request)
    return caught.value


def _obs_package(emu: Emulator, version: str, content: bytes = b"firmware " * 512) -> ObsLocation:
    """An object in the emulator's stand-in for an OBS bucket."""
    path = emu.settings.obs_root / "sim-bucket" / "firmware" / f"fw-{version}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return ObsLocation(
        region_name="cn-north-4", bucket_name="sim-bucket", object_key=f"firmware/fw-{version}.bin"
    )


async def _create_package(client: Any, emu: Emulator, version: str, product: str) -> Any:
    body = CreateOtaPackage(
        package_type="firmwarePackage",
        product_id=product,
        version=version,
        support_source_versions=["1.0.0"],
        description="rehearsal firmware",
        file_location=FileLocation(obs_location=_obs_package(emu, version)),
    )
    return await run(client.create_ota_package, CreateOtaPackageRequest(body=body))


@pytest.mark.broker
async def test_registry_and_a_command_task_over_a_fleet(tmp_path: Path, broker: Mosquitto) -> None:
    """Devices, groups and a createCommands task: created, shown, listed, deleted via the SDK."""
    async with (
        emulator(tmp_path, broker_url=broker.url, **CREDENTIALS) as emu,
        fleet(emu, broker.port, tmp_path, count=4, handlers=[PING]) as (runner, prefix),
    ):
        client = iotda_client(emu)
        page = await run(client.list_devices, ListDevicesRequest(limit=2))
        assert len(page.devices) == 2
        assert page.page.count == 4
        ids = sorted(
            d.device_id for d in (await run(client.list_devices, ListDevicesRequest())).devices
        )
        shown = await run(client.show_device, ShowDeviceRequest(device_id=ids[0]))
        assert shown.device_id == ids[0]
        assert shown.status != "ONLINE" or emu.registry.connected.get(ids[0]) is True

        added = await run(
            client.add_device,
            AddDeviceRequest(
                body=AddDevice(
                    node_id="spare-1",
                    product_id="simproduct",
                    device_name="spare one",
                    auth_info=AuthInfo(auth_type="SECRET", secret=SPARE_SECRET),
                )
            ),
        )
        assert added.auth_info.secret == SPARE_SECRET
        assert added.node_type == "GATEWAY"
        assert added.create_time.endswith("Z")
        assert added.status == "INACTIVE"  # registered, never connected
        await run(client.freeze_device, FreezeDeviceRequest(device_id=added.device_id))
        frozen = await run(client.show_device, ShowDeviceRequest(device_id=added.device_id))
        assert frozen.status == "FROZEN"
        await run(client.unfreeze_device, UnfreezeDeviceRequest(device_id=added.device_id))
        await run(client.delete_device, DeleteDeviceRequest(device_id=added.device_id))

        group = await run(
            client.add_device_group,
            AddDeviceGroupRequest(body=AddDeviceGroupDTO(name="sdk-group", description="four")),
        )
        assert (group.description, group.group_type) == ("four", "STATIC")
        for device_id in ids:
            await run(
                client.create_or_delete_device_in_group,
                CreateOrDeleteDeviceInGroupRequest(
                    group_id=group.group_id, action_id="addDevice", device_id=device_id
                ),
            )
        members = await run(
            client.show_devices_in_group, ShowDevicesInGroupRequest(group_id=group.group_id)
        )
        assert sorted(d.device_id for d in members.devices) == ids
        listed = await run(client.list_device_groups, ListDeviceGroupsRequest())
        assert "sdk-group" in {g.name for g in listed.device_groups}

        task = await run(
            client.create_batch_task,
            CreateBatchTaskRequest(
                body=CreateBatchTask(
                    task_name="ping_all",
                    task_type="createCommands",
                    targets_filter={"group_ids": [group.group_id]},
                    document=COMMAND,
                )
            ),
        )
        done = await _until(client, task.task_id, lambda s: s.batchtask.status in FINISHED, "end")
        assert done.batchtask.status == "Success"
        assert done.batchtask.task_progress.success == 4
        one = await run(
            client.show_batch_task,
            ShowBatchTaskRequest(task_id=task.task_id, task_detail_status="Success", target=ids[1]),
        )
        assert [d.target for d in one.task_details] == [ids[1]]
        none = await run(
            client.show_batch_task,
            ShowBatchTaskRequest(task_id=task.task_id, task_detail_status="Fail"),
        )
        assert none.task_details == []
        tasks = await run(
            client.list_batch_tasks, ListBatchTasksRequest(task_type="createCommands")
        )
        assert [t.task_id for t in tasks.batchtasks] == [task.task_id]
        await run(client.delete_batch_task, DeleteBatchTaskRequest(task_id=task.task_id))
        await run(client.delete_device_group, DeleteDeviceGroupRequest(group_id=group.group_id))
        gone = await _refused(
            client.show_device_group, ShowDeviceGroupRequest(group_id=group.group_id)
        )
        assert (gone.status_code, gone.error_code) == (404, "IOTDA.014000")
        assert runner.executions.total == 4
        assert prefix


@pytest.mark.broker
async def test_an_obs_package_upgrades_the_fleet(tmp_path: Path, broker: Mosquitto) -> None:
    """CreateOtaPackage from a bucket directory, then a firmwareUpgrade that succeeds."""
    async with (
        emulator(tmp_path, broker_url=broker.url, **CREDENTIALS) as emu,
        fleet(emu, broker.port, tmp_path, count=3, handlers=[]) as (_, prefix),
    ):
        client = iotda_client(emu)
        package = await _create_package(client, emu, "2.0.0", "simproduct")
        assert package.file_location.obs_location.bucket_name == "sim-bucket"
        shown = await run(
            client.show_ota_package, ShowOtaPackageRequest(package_id=package.package_id)
        )
        assert (shown.version, shown.support_source_versions) == ("2.0.0", ["1.0.0"])
        listed = await run(
            client.list_ota_package_info, ListOtaPackageInfoRequest(package_type="firmwarePackage")
        )
        assert [p.package_id for p in listed.packages] == [package.package_id]
        ids = sorted(
            d.device_id for d in (await run(client.list_devices, ListDevicesRequest())).devices
        )
        task = await run(
            client.create_batch_task,
            CreateBatchTaskRequest(
                body=CreateBatchTask(
                    task_name="firmware_2_0_0",
                    task_type="firmwareUpgrade",
                    targets=ids,
                    document={"package_id": package.package_id},
                )
            ),
        )
        done = await _until(client, task.task_id, lambda s: s.batchtask.status in FINISHED, "end")
        assert done.batchtask.status == "Success", done.task_details
        assert done.batchtask.task_progress.success == 3
        _, downloads = await call(emu, "GET", "/sim/v1/downloads")
        assert {d["device_id"] for d in downloads["downloads"]} == set(ids)
        await run(client.delete_batch_task, DeleteBatchTaskRequest(task_id=task.task_id))
        await run(client.delete_ota_package, DeleteOtaPackageRequest(package_id=package.package_id))
        assert prefix


@pytest.mark.broker
async def test_stop_per_target_and_retry_of_failed_upgrades(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """StopBatchTask answers per target; RetryBatchTask runs failed subtasks again."""
    failing = UpgradeSpec(failure_rate=1.0)
    async with (
        emulator(tmp_path, broker_url=broker.url, **CREDENTIALS) as emu,
        fleet(emu, broker.port, tmp_path, count=3, handlers=[], upgrades=failing) as (_, prefix),
    ):
        client = iotda_client(emu)
        package = await _create_package(client, emu, "3.0.0", "simproduct")
        ids = sorted(
            d.device_id for d in (await run(client.list_devices, ListDevicesRequest())).devices
        )
        document = {"package_id": package.package_id}
        scheduled = await run(
            client.create_batch_task,
            CreateBatchTaskRequest(
                body=CreateBatchTask(
                    task_name="later", task_type="firmwareUpgrade", targets=ids,
                    document=document, task_policy={"schedule_time": _later()},
                )
            ),
        )  # fmt: skip
        stopped = await run(
            client.stop_batch_task,
            StopBatchTaskRequest(task_id=scheduled.task_id, body=BatchTargets(targets=[ids[0]])),
        )
        assert [(t.target, t.status) for t in stopped.targets] == [(ids[0], "success")]
        shown = await run(client.show_batch_task, ShowBatchTaskRequest(task_id=scheduled.task_id))
        assert shown.batchtask.task_progress.stopped == 1  # one target, not the whole task
        rest = await run(client.stop_batch_task, StopBatchTaskRequest(task_id=scheduled.task_id))
        assert sorted(t.target for t in rest.targets) == ids[1:]
        shown = await run(client.show_batch_task, ShowBatchTaskRequest(task_id=scheduled.task_id))
        assert shown.batchtask.status == "Stopped"
        again = await _refused(
            client.stop_batch_task, StopBatchTaskRequest(task_id=scheduled.task_id)
        )
        assert (again.status_code, again.error_code) == (400, "IOTDA.010001")

        task = await run(
            client.create_batch_task,
            CreateBatchTaskRequest(
                body=CreateBatchTask(
                    task_name="now", task_type="firmwareUpgrade", targets=ids, document=document
                )
            ),
        )
        done = await _until(client, task.task_id, lambda s: s.batchtask.status in FINISHED, "end")
        assert done.batchtask.status == "Fail"
        retried = await run(
            client.retry_batch_task,
            RetryBatchTaskRequest(task_id=task.task_id, body=BatchTargets(targets=[ids[2]])),
        )
        assert [(t.target, t.status) for t in retried.targets] == [(ids[2], "success")]
        _, subtasks = await call(emu, "GET", f"/sim/v1/tasks/{task.task_id}/subtasks")
        attempts = {s["device_id"]: s["attempts"] for s in subtasks["subtasks"]}
        assert attempts[ids[0]] == 1
        again_done = await _until(
            client, task.task_id, lambda s: s.batchtask.status in FINISHED, "the retry"
        )
        assert again_done.batchtask.status == "Fail"
        _, subtasks = await call(emu, "GET", f"/sim/v1/tasks/{task.task_id}/subtasks")
        attempts = {s["device_id"]: s["attempts"] for s in subtasks["subtasks"]}
        assert attempts == {ids[0]: 1, ids[1]: 1, ids[2]: 2}  # only the one retried ran again
        everything = await run(client.retry_batch_task, RetryBatchTaskRequest(task_id=task.task_id))
        assert sorted(t.target for t in everything.targets) == ids
        commands = await run(
            client.create_batch_task,
            CreateBatchTaskRequest(
                body=CreateBatchTask(
                    task_name="cmd", task_type="createCommands", targets=ids[:1],
                    document=COMMAND, task_policy={"schedule_time": _later()},
                )
            ),
        )  # fmt: skip
        refused = await _refused(
            client.stop_batch_task, StopBatchTaskRequest(task_id=commands.task_id)
        )
        assert (refused.status_code, refused.error_code) == (400, "IOTDA.000006")
        refused = await _refused(
            client.retry_batch_task, RetryBatchTaskRequest(task_id=commands.task_id)
        )
        assert (refused.status_code, refused.error_code) == (400, "IOTDA.000006")
        assert prefix


def _csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _xlsx(rows: list[dict[str, str]]) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(rows[0]))
    for row in rows:
        sheet.append(list(row.values()))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@pytest.mark.parametrize(("name", "encode"), [("devices.csv", _csv), ("devices.xlsx", _xlsx)])
async def test_batch_task_files_upload_as_multipart(
    tmp_path: Path, name: str, encode: Callable[[list[dict[str, str]]], bytes]
) -> None:
    """UploadBatchTaskFile (multipart, CSV or xlsx) feeds createDevices; files list and delete."""
    rows = [{"node_id": f"n-{i}", "product_id": "p1"} for i in range(3)]
    source = tmp_path / name
    source.write_bytes(encode(rows))
    async with emulator(tmp_path, **CREDENTIALS) as emu:
        client = iotda_client(emu)
        with source.open("rb") as handle:
            uploaded = await run(
                client.upload_batch_task_file,
                UploadBatchTaskFileRequest(
                    body=UploadBatchTaskFileRequestBody(file=FormFile(handle))
                ),
            )
        assert uploaded.file_name == name
        assert uploaded.upload_time.endswith("Z")
        files = await run(client.list_batch_task_files, ListBatchTaskFilesRequest())
        assert [f.file_id for f in files.files] == [uploaded.file_id]
        task = await run(
            client.create_batch_task,
            CreateBatchTaskRequest(
                body=CreateBatchTask(
                    task_name="add_three",
                    task_type="createDevices",
                    document_source=uploaded.file_id,
                )
            ),
        )
        done = await _until(client, task.task_id, lambda s: s.batchtask.status in FINISHED, "end")
        assert done.batchtask.status == "Success"
        devices = await run(client.list_devices, ListDevicesRequest(product_id="p1"))
        assert sorted(d.node_id for d in devices.devices) == ["n-0", "n-1", "n-2"]
        await run(
            client.delete_batch_task_file, DeleteBatchTaskFileRequest(file_id=uploaded.file_id)
        )
        assert (await run(client.list_batch_task_files, ListBatchTaskFilesRequest())).files == []


async def test_signatures_and_tokens_through_the_sdk(tmp_path: Path) -> None:
    """A signed request passes; a wrong key, a wrong token or none gets the SDK's exception."""
    async with emulator(tmp_path, huawei_token="sim-token", **CREDENTIALS) as emu:
        assert (await run(iotda_client(emu).list_devices, ListDevicesRequest())).devices == []
        wrong_sk = await _refused(
            iotda_client(emu, sk="not-the-secret-key").list_devices, ListDevicesRequest()
        )
        assert (wrong_sk.status_code, wrong_sk.error_code) == (401, "APIG.0301")
        wrong_ak = await _refused(
            iotda_client(emu, ak="SOMEBODYELSE").list_devices, ListDevicesRequest()
        )
        assert (wrong_ak.status_code, wrong_ak.error_code) == (401, "APIG.0301")
    async with emulator(tmp_path, huawei_token="sim-token") as emu:
        # Token only: the SDK's hook adds X-Auth-Token to what it signs with any key.
        token = iotda_client(emu, ak="ANY", sk="any-secret", token="sim-token")
        assert (await run(token.list_devices, ListDevicesRequest())).devices == []
        bad = await _refused(
            iotda_client(emu, token="other").list_devices,
            ListDevicesRequest(),
        )
        assert (bad.status_code, bad.error_code) == (401, "IOTDA.000002")


def _task(**fields: Any) -> CreateBatchTaskRequest:
    body: dict[str, Any] = {"task_name": "t", "task_type": "createCommands", "targets": ["dev-1"],
                            "document": COMMAND}  # fmt: skip
    body.update(fields)
    return CreateBatchTaskRequest(body=CreateBatchTask(**body))


async def test_every_documented_error_code_reaches_the_sdk(tmp_path: Path) -> None:
    """Each error the emulator documents for IoTDA arrives as ClientRequestException."""
    async with emulator(tmp_path, **CREDENTIALS) as emu:
        await call(emu, "POST", "/sim/v1/fleet", json={"devices": [{"device_id": "dev-1"}]})
        client = iotda_client(emu)
        cases: list[tuple[Callable[..., Any], Any, int, str]] = [
            (client.create_batch_task, _task(task_name="has spaces"), 400, "IOTDA.000006"),
            (client.create_batch_task, _task(targets=["nobody"]), 400, "IOTDA.000006"),
            (client.show_batch_task, ShowBatchTaskRequest(task_id="f" * 24), 404, "IOTDA.014000"),
            (client.show_device, ShowDeviceRequest(device_id="nobody"), 404, "IOTDA.014000"),
            (
                client.show_ota_package,
                ShowOtaPackageRequest(package_id="nothing"),
                404,
                "IOTDA.014000",
            ),
            (client.list_products, ListProductsRequest(), 404, "APIG.0101"),  # not emulated
            (  # PUT on a path that serves GET and DELETE: the gateway knows no such API
                client.update_device,
                UpdateDeviceRequest(device_id="dev-1", body=UpdateDevice(device_name="x")),
                404,
                "APIG.0101",
            ),
            (
                client.create_batch_task,
                _task(targets=[f"dev-{i:07d}-{'x' * 100}" for i in range(80_000)]),
                413,
                "APIG.0201",
            ),
        ]
        for call_, request, status, code in cases:
            refused = await _refused(call_, request)
            assert (refused.status_code, refused.error_code) == (status, code), (request, refused)
            assert refused.error_msg
        later = await run(client.create_batch_task, _task(task_policy={"schedule_time": _later()}))
        busy = await _refused(
            client.delete_batch_task, DeleteBatchTaskRequest(task_id=later.task_id)
        )
        assert (busy.status_code, busy.error_code) == (400, "IOTDA.010001")
        spare = AddDevice(node_id="n1", product_id="p1")
        await run(client.add_device, AddDeviceRequest(body=spare))
        twice = await _refused(client.add_device, AddDeviceRequest(body=spare))
        assert (twice.status_code, twice.error_code) == (409, "IOTDA.014108")
        group = AddDeviceGroupRequest(body=AddDeviceGroupDTO(name="g1"))
        await run(client.add_device_group, group)
        twice = await _refused(client.add_device_group, group)
        assert (twice.status_code, twice.error_code) == (409, "IOTDA.014111")
        await _create_package(client, emu, "9.9.9", "p1")
        twice = await _refused(client.create_ota_package, CreateOtaPackageRequest(
            body=CreateOtaPackage(
                package_type="firmwarePackage", product_id="p1", version="9.9.9",
                file_location=FileLocation(obs_location=_obs_package(emu, "9.9.9")),
            )
        ))  # fmt: skip
        assert (twice.status_code, twice.error_code) == (400, "IOTDA.014203")
        missing = await _refused(client.create_ota_package, CreateOtaPackageRequest(
            body=CreateOtaPackage(
                package_type="firmwarePackage", product_id="p1", version="9.9.10",
                file_location=FileLocation(obs_location=ObsLocation(
                    region_name="cn-north-4", bucket_name="sim-bucket", object_key="no/such.bin"
                )),
            )
        ))  # fmt: skip
        assert (missing.status_code, missing.error_code) == (400, "IOTDA.000006")
        assert "no/such.bin" in missing.error_msg

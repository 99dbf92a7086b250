"""Huawei IoTDA batch-task files and OTA packages: upload, list, show, delete, download tokens.

``UploadBatchTaskFile`` takes ``multipart/form-data`` with a ``file`` part (what the SDK sends),
a CSV or an Excel workbook (``.xlsx``; the first sheet, the first row naming the columns); a
bare CSV body is still read. ``CreateOtaPackage`` names an OBS object
(``file_location.obs_location``: ``bucket_name``, ``object_key``): the emulator has no OBS, so
bucket ``B`` is the directory ``{obs_dir}/B`` and the object is the file ``object_key`` under it
(``--obs-dir``; default ``{data_dir}/obs``). Such a package is kept "in OBS": devices get
``*_upgrade_v2`` events with a pre-signed URL. The emulator's own upload (the file as the body,
``?version=&package_type=&name=&location=``) stays for scenarios.
"""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import asdict
from email import policy
from email.parser import BytesParser
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import web

from agent.sim.emulator import validation as v
from agent.sim.emulator.api_huawei import fmt_time, iotda, json_body, paging
from agent.sim.emulator.context import EmulatorContext
from agent.sim.emulator.errors import json_response
from agent.sim.emulator.http import emulator_of
from agent.sim.emulator.registry import Package
from agent.sim.errors import ApiRejected, RequestInvalid

PACKAGE_TYPES = ("softwarePackage", "firmwarePackage")
VERSION = r"[A-Za-z0-9_\-.]+"
_XLSX_MAGIC = b"PK\x03\x04"


def _csv_rows(raw: bytes) -> list[dict[str, str]]:
    try:
        text = raw.decode("utf-8-sig")
        return [
            {str(k).strip(): (val or "").strip() for k, val in row.items() if k}
            for row in csv.DictReader(io.StringIO(text))
        ]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RequestInvalid("file", "malformed", f"not a UTF-8 CSV file: {exc}") from exc


def _xlsx_rows(raw: bytes) -> list[dict[str, str]]:
    from openpyxl import load_workbook  # the sim extra; loaded only for workbooks

    try:
        book = load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a damaged workbook
        raise RequestInvalid("file", "malformed", f"not an xlsx workbook: {exc}") from exc
    try:
        rows = list(book.worksheets[0].iter_rows(values_only=True))
    finally:
        book.close()
    if not rows:
        return []
    header = [str(cell).strip() if cell is not None else "" for cell in rows[0]]
    return [
        {
            name: "" if cell is None else str(cell).strip()
            for name, cell in zip(header, row, strict=False)
            if name
        }
        for row in rows[1:]
        if any(cell not in (None, "") for cell in row)
    ]


def parse_file(name: str, raw: bytes) -> list[dict[str, str]]:
    """A batch-task file's rows, by its kind (xlsx by name or content, else CSV)."""
    lower = name.lower()
    if lower.endswith(".xls"):
        raise RequestInvalid("file", "value", "xls (Excel 97) workbooks are not read; use xlsx")
    if lower.endswith(".xlsx") or raw.startswith(_XLSX_MAGIC):
        return _xlsx_rows(raw)
    return _csv_rows(raw)


async def _file_part(request: web.Request) -> tuple[str, bytes]:
    """The uploaded file's name and content (multipart ``file``, or the raw body).

    The body is parsed from bytes: the signature check has read it already.
    """
    raw = await request.read()
    if request.content_type != "multipart/form-data":
        return "batchtask.csv", raw
    head = f"Content-Type: {request.headers.get('Content-Type', '')}\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        raise RequestInvalid("file", "malformed", "the multipart body cannot be read")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            content = part.get_payload(decode=True)
            name = part.get_filename() or "batchtask.csv"
            return name, content if isinstance(content, bytes) else b""
    raise RequestInvalid("file", "missing", "the multipart body has no part named file")


def _file_view(emulator: EmulatorContext, file_id: str) -> dict[str, Any]:
    info = emulator.registry.file_info.get(file_id, {})
    return {
        "file_id": file_id,
        "file_name": info.get("file_name", ""),
        "upload_time": fmt_time(info.get("upload_time", 0.0)),
    }


async def upload_file(request: web.Request) -> web.StreamResponse:
    """POST /v5/iot/{project_id}/batchtask-files: a CSV or xlsx file with a header row."""
    emulator = emulator_of(request)
    name, raw = await _file_part(request)
    rows = parse_file(name, raw)
    if not rows:
        raise RequestInvalid("file", "value", "the file has no rows")
    if len(rows) > emulator.settings.max_targets:
        raise RequestInvalid("file", "value", f"at most {emulator.settings.max_targets} rows")
    file_id = await emulator.registry.put_file(rows, file_name=name, upload_time=emulator.clock())
    return json_response({**_file_view(emulator, file_id), "rows": len(rows)}, status=201)


async def list_files(request: web.Request) -> web.StreamResponse:
    """GET /v5/iot/{project_id}/batchtask-files."""
    emulator = emulator_of(request)
    return json_response({"files": [_file_view(emulator, f) for f in emulator.registry.files]})


async def delete_file(request: web.Request) -> web.StreamResponse:
    """DELETE /v5/iot/{project_id}/batchtask-files/{file_id}."""
    emulator = emulator_of(request)
    file_id = request.match_info["file_id"]
    if file_id not in emulator.registry.files:
        raise ApiRejected(404, "IOTDA.014000", "the file does not exist")
    await emulator.registry.remove_file(file_id)
    return web.Response(status=204)


# -- OTA packages ---------------------------------------------------------------------------


def package_view(package: Package) -> dict[str, Any]:
    """A package as ShowOtaPackage answers (``OtaPackageInfo`` plus ``file_location``)."""
    details = package.details
    view: dict[str, Any] = {
        "package_id": package.package_id,
        "app_id": details.get("app_id"),
        "package_type": package.package_type,
        "product_id": details.get("product_id"),
        "version": package.version,
        "support_source_versions": details.get("support_source_versions", []),
        "description": details.get("description"),
        "custom_info": details.get("custom_info"),
        "create_time": fmt_time(package.created_at),
    }
    if "file_location" in details:
        view["file_location"] = details["file_location"]
    return view


def obs_file(emulator: EmulatorContext, location: dict[str, Any]) -> Path:
    """The local file standing for an OBS object (``{obs_dir}/{bucket}/{object_key}``)."""
    where = "file_location.obs_location"
    v.text(location, "region_name", max_len=256)
    bucket = v.text(location, "bucket_name", required=True, min_len=3, max_len=63,
                    pattern=r"[a-z0-9][a-z0-9.\-]*", what="a-z, 0-9, . and -")  # fmt: skip
    key = v.text(location, "object_key", required=True, min_len=1, max_len=1024)
    parts = PurePosixPath(key or "").parts
    if not parts or parts[0] == "/" or ".." in parts:
        raise RequestInvalid(f"{where}.object_key", "value", "must be a relative object key")
    path = emulator.settings.obs_root / (bucket or "") / Path(*parts)
    if not path.is_file():
        raise RequestInvalid(
            f"{where}.object_key", "value", f"no object {key!r} in bucket {bucket!r} ({path})"
        )
    return path


async def create_package(request: web.Request) -> web.StreamResponse:
    """POST /v5/iot/{project_id}/ota-upgrades/packages: JSON (CreateOtaPackage) or the file."""
    if request.content_type != "application/json":
        return await upload_package(request)
    emulator = emulator_of(request)
    body = await json_body(request)
    kind = v.one_of(body, "package_type", PACKAGE_TYPES, required=True)
    product_id = v.text(body, "product_id", required=True, min_len=1, max_len=36)
    version = v.text(body, "version", required=True, min_len=1, max_len=256, pattern=VERSION,
                     what="letters, digits, _, - and .")  # fmt: skip
    sources = v.string_list(body, "support_source_versions", max_items=20, max_len=256) or []
    description = v.text(body, "description", max_len=1024)
    custom_info = v.text(body, "custom_info", max_len=4096)
    app_id = v.text(body, "app_id", max_len=36)
    file_location: dict[str, Any] = v.get(body, "file_location", dict, required=True)
    obs: dict[str, Any] | None = v.get(file_location, "obs_location", dict)
    if obs is None:
        raise RequestInvalid("file_location.obs_location", "missing", "is required")
    try:
        path = obs_file(emulator, obs)
    except RequestInvalid as exc:
        field = (
            exc.field
            if exc.field.startswith("file_")
            else f"file_location.obs_location.{exc.field}"
        )
        raise RequestInvalid(field, exc.problem, exc.message) from exc
    if any(
        p.version == version and p.details.get("product_id") == product_id
        for p in emulator.registry.packages.values()
    ):
        raise ApiRejected(400, "IOTDA.014203", f"version {version} of this product exists")
    data = await asyncio.to_thread(path.read_bytes)
    package = await emulator.registry.add_package(
        data,
        name=PurePosixPath(str(obs["object_key"])).name,
        version=version or "",
        package_type=kind,
        location="obs",
        details={
            "app_id": app_id,
            "product_id": product_id,
            "support_source_versions": sources,
            "description": description,
            "custom_info": custom_info,
            "file_location": {"obs_location": obs},
        },
        created_at=emulator.clock(),
    )
    return json_response(package_view(package), status=201)


async def upload_package(request: web.Request) -> web.StreamResponse:
    """The emulator's upload: the file as the body, ``?version=&package_type=&name=&location=``.

    ``location=obs`` keeps it "in OBS": devices then get ``*_upgrade_v2`` events with a
    pre-signed URL instead of an ``access_token``.
    """
    emulator = emulator_of(request)
    query = dict(request.query)
    version = v.text(query, "version", required=True, min_len=1, max_len=256)
    kind = v.one_of(query, "package_type", PACKAGE_TYPES, required=True)
    name = v.text(query, "name", max_len=128) or "package.bin"
    location = v.one_of(query, "location", ("iotda", "obs"), required=False) or "iotda"
    data = await request.read()
    if not data:
        raise RequestInvalid("file", "missing", "the request body holds no package")
    package = await emulator.registry.add_package(
        data, name=name, version=version or "", package_type=kind, location=location,
        created_at=emulator.clock(),
    )  # fmt: skip
    view = {k: val for k, val in asdict(package).items() if k not in ("path", "details")}
    return json_response({**view, "sign": package.sha256, "file_size": package.size}, status=201)


def _package(emulator: EmulatorContext, request: web.Request) -> Package:
    package = emulator.registry.packages.get(request.match_info["package_id"])
    if package is None:
        raise ApiRejected(404, "IOTDA.014000", "the package does not exist")
    return package


async def show_package(request: web.Request) -> web.StreamResponse:
    """GET /v5/iot/{project_id}/ota-upgrades/packages/{package_id}."""
    return json_response(package_view(_package(emulator_of(request), request)))


async def list_packages(request: web.Request) -> web.StreamResponse:
    """GET .../ota-upgrades/packages?package_type=&product_id=&version=&limit=&offset=."""
    emulator = emulator_of(request)
    limit, offset = paging(request)
    query = dict(request.query)
    kind = v.one_of(query, "package_type", PACKAGE_TYPES, required=True)
    product = query.get("product_id")
    version = query.get("version")
    found = [
        p
        for p in emulator.registry.packages.values()
        if p.package_type == kind
        and (product is None or p.details.get("product_id") == product)
        and (version is None or p.version == version)
    ]
    page = found[offset : offset + limit]
    return json_response(
        {
            "packages": [
                {k: val for k, val in package_view(p).items() if k != "file_location"} for p in page
            ],
            "page": {"count": len(found), "marker": page[-1].package_id if page else None},
        }
    )


async def delete_package(request: web.Request) -> web.StreamResponse:
    """DELETE /v5/iot/{project_id}/ota-upgrades/packages/{package_id}."""
    emulator = emulator_of(request)
    await emulator.registry.remove_package(_package(emulator, request).package_id)
    return web.Response(status=204)


async def package_token(request: web.Request) -> web.StreamResponse:
    """POST .../ota-upgrades/packages/{package_id}/tokens: a download token (emulator's own)."""
    emulator = emulator_of(request)
    package_id = _package(emulator, request).package_id
    token = emulator.registry.issue_token(package_id, emulator.clock())
    url = f"{emulator.url}/ota/packages/{package_id}"
    return json_response({"access_token": token, "url": url, "expires": 86400}, status=201)


def register(app: web.Application) -> None:
    """Add the file and package routes."""
    base = "/v5/iot/{project_id}"
    app.router.add_post(base + "/batchtask-files", iotda(upload_file))
    app.router.add_get(base + "/batchtask-files", iotda(list_files))
    app.router.add_delete(base + "/batchtask-files/{file_id}", iotda(delete_file))
    packages = base + "/ota-upgrades/packages"
    app.router.add_post(packages, iotda(create_package))
    app.router.add_get(packages, iotda(list_packages))
    app.router.add_get(packages + "/{package_id}", iotda(show_package))
    app.router.add_delete(packages + "/{package_id}", iotda(delete_package))
    app.router.add_post(packages + "/{package_id}/tokens", iotda(package_token))

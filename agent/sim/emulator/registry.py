"""The emulator's registry: devices, products, groups, workflows, OTA packages and uploaded files.

Everything is held in memory for the engine's lookups and written through to the store before
the API call that changed it answers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.sim.emulator.records import Device
from agent.sim.emulator.store import EmulatorStore

# Download tokens for OTA packages are valid this long (Huawei IoTDA: 24 hours).
TOKEN_TTL_S = 86400.0
_SIGNING_KEY_ID = "download-tokens"
_TOKEN_LENGTH = 10 + 16 + 64  # expiry, nonce, HMAC-SHA256 (hex)


@dataclass(slots=True)
class Group:
    """A device group (Huawei IoTDA groups, OceanConnect groups, WeData's device binding)."""

    group_id: str
    name: str
    platform: str
    device_ids: list[str] = field(default_factory=list)
    description: str = ""


@dataclass(slots=True)
class Package:
    """An uploaded OTA package, served over loopback HTTP to holders of an access token."""

    package_id: str
    name: str
    version: str
    package_type: str
    size: int
    sha256: str
    path: str
    location: str = "iotda"  # "iotda" (*_upgrade events) or "obs" (*_upgrade_v2, URL signed)
    # CreateOtaPackage's fields (product_id, description, custom_info, file_location, ...).
    details: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(slots=True)
class Workflow:
    """A WeData workflow, interpreted for devices: its script tasks run on a device group."""

    workflow_id: str
    project_id: str
    name: str
    group_id: str


class Registry:
    """Devices and the things tasks refer to."""

    def __init__(self, store: EmulatorStore, package_dir: Path) -> None:
        self._store = store
        self.package_dir = package_dir
        self.devices: dict[str, Device] = {}
        self.products: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, Group] = {}
        self.packages: dict[str, Package] = {}
        self.workflows: dict[str, Workflow] = {}
        self.files: dict[str, list[dict[str, str]]] = {}
        self.file_info: dict[str, dict[str, Any]] = {}  # file_name, upload_time
        # Download tokens are signed, not stored: they outlive an emulator restart.
        self._token_key = secrets.token_bytes(32)
        self._names: dict[tuple[str, str], str] = {}  # (product_id, name) -> device_id
        # Whether a device is connected now, for devices seen on the broker (a device never
        # seen has no entry: IoTDA shows it INACTIVE, Tencent offline).
        self.connected: dict[str, bool] = {}

    async def load(self) -> None:
        """Read everything back from the store."""
        self.devices = {
            k: Device(**v) for k, v in (await self._store.load_objects("device")).items()
        }
        self.products = await self._store.load_objects("product")
        self.groups = {k: Group(**v) for k, v in (await self._store.load_objects("group")).items()}
        self.packages = {
            k: Package(**v) for k, v in (await self._store.load_objects("package")).items()
        }
        self.workflows = {
            k: Workflow(**v) for k, v in (await self._store.load_objects("workflow")).items()
        }
        stored_files = await self._store.load_objects("file")
        self.files = {k: v["rows"] for k, v in stored_files.items()}
        self.file_info = {
            k: {"file_name": v.get("file_name", ""), "upload_time": v.get("upload_time", 0.0)}
            for k, v in stored_files.items()
        }
        stored = (await self._store.load_objects("secret")).get(_SIGNING_KEY_ID)
        if stored is None:
            key = {"key": self._token_key.hex()}
            await self._store.put_objects("secret", {_SIGNING_KEY_ID: key})
        else:
            self._token_key = bytes.fromhex(stored["key"])
        self._names = {(d.product_id, d.name): d.device_id for d in self.devices.values()}

    # -- devices --------------------------------------------------------------------------

    async def add_devices(self, devices: Iterable[Device]) -> list[Device]:
        """Add or replace devices."""
        added = list(devices)
        for device in added:
            self.devices[device.device_id] = device
            self._names[(device.product_id, device.name)] = device.device_id
        await self._store.put_objects("device", {d.device_id: asdict(d) for d in added})
        return added

    async def update_devices(self, devices: Iterable[Device]) -> None:
        """Write back devices changed in place (frozen, renamed)."""
        await self._store.put_objects("device", {d.device_id: asdict(d) for d in devices})

    async def remove_devices(self, device_ids: Iterable[str]) -> list[Device]:
        """Remove devices (and their group memberships); returns those that existed."""
        removed = [self.devices.pop(i) for i in list(device_ids) if i in self.devices]
        for device in removed:
            self._names.pop((device.product_id, device.name), None)
        gone = {d.device_id for d in removed}
        changed = []
        for group in self.groups.values():
            kept = [i for i in group.device_ids if i not in gone]
            if len(kept) != len(group.device_ids):
                group.device_ids = kept
                changed.append(group)
        await self._store.delete_objects("device", gone)
        if changed:
            await self._store.put_objects("group", {g.group_id: asdict(g) for g in changed})
        return removed

    def children(self, gateway_id: str) -> list[Device]:
        """Devices whose gateway is ``gateway_id``."""
        return [d for d in self.devices.values() if d.gateway_id == gateway_id]

    def by_name(self, product_id: str, name: str) -> Device | None:
        """A device by product and name (Tencent's addressing)."""
        device_id = self._names.get((product_id, name))
        return None if device_id is None else self.devices.get(device_id)

    def names_of_product(self, product_id: str) -> list[tuple[str, str]]:
        """``(name, device_id)`` of every device of a product, in name order."""
        return sorted(
            (d.name, d.device_id) for d in self.devices.values() if d.product_id == product_id
        )

    # -- products, groups, workflows, files -----------------------------------------------

    async def add_product(
        self,
        product_id: str,
        platform: str,
        name: str,
        properties: dict[str, Any] | None = None,
        created_at: float | None = None,
    ) -> dict[str, Any]:
        """Register a product."""
        product: dict[str, Any] = {"product_id": product_id, "platform": platform, "name": name}
        if properties:
            product["properties"] = properties
        if created_at is not None:
            product["created_at"] = created_at
        self.products[product_id] = product
        await self._store.put_objects("product", {product_id: product})
        return product

    async def put_group(self, group: Group) -> Group:
        """Create or replace a group."""
        self.groups[group.group_id] = group
        await self._store.put_objects("group", {group.group_id: asdict(group)})
        return group

    async def remove_product(self, product_id: str) -> None:
        """Forget a product (its devices must be gone already)."""
        self.products.pop(product_id, None)
        await self._store.delete_objects("product", [product_id])

    async def remove_group(self, group_id: str) -> None:
        """Forget a group (its devices stay)."""
        self.groups.pop(group_id, None)
        await self._store.delete_objects("group", [group_id])

    def group_by_name(self, name: str) -> Group | None:
        """A group by its name."""
        return next((g for g in self.groups.values() if g.name == name), None)

    async def put_workflow(self, workflow: Workflow) -> Workflow:
        """Create or replace a workflow binding."""
        self.workflows[workflow.workflow_id] = workflow
        await self._store.put_objects("workflow", {workflow.workflow_id: asdict(workflow)})
        return workflow

    async def put_file(
        self, rows: list[dict[str, str]], *, file_name: str = "", upload_time: float = 0.0
    ) -> str:
        """Keep an uploaded batch-task file; returns its id."""
        file_id = secrets.token_hex(12)
        self.files[file_id] = rows
        self.file_info[file_id] = {"file_name": file_name, "upload_time": upload_time}
        stored = {"rows": rows, "file_name": file_name, "upload_time": upload_time}
        await self._store.put_objects("file", {file_id: stored})
        return file_id

    async def remove_file(self, file_id: str) -> None:
        """Forget an uploaded batch-task file."""
        self.files.pop(file_id, None)
        self.file_info.pop(file_id, None)
        await self._store.delete_objects("file", [file_id])

    # -- OTA packages ---------------------------------------------------------------------

    async def add_package(
        self,
        data: bytes,
        *,
        name: str,
        version: str,
        package_type: str,
        location: str = "iotda",
        details: dict[str, Any] | None = None,
        created_at: float = 0.0,
    ) -> Package:
        """Store an uploaded package file; returns its record (``package_id`` included)."""
        package_id = secrets.token_hex(12)
        self.package_dir.mkdir(parents=True, exist_ok=True)
        path = self.package_dir / package_id
        path.write_bytes(data)
        package = Package(
            package_id=package_id,
            name=name,
            version=version,
            package_type=package_type,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            path=str(path),
            location=location,
            details=details or {},
            created_at=created_at,
        )
        self.packages[package_id] = package
        await self._store.put_objects("package", {package_id: asdict(package)})
        return package

    async def remove_package(self, package_id: str) -> None:
        """Forget a package and delete its file."""
        package = self.packages.pop(package_id, None)
        if package is not None:
            Path(package.path).unlink(missing_ok=True)  # noqa: ASYNC240 - one small unlink
        await self._store.delete_objects("package", [package_id])

    def issue_token(self, package_id: str, now: float | None = None, *, subject: str = "") -> str:
        """A download token for a package (and the device it is for), valid for a day."""
        expires = f"{int((now or time.time()) + TOKEN_TTL_S):010x}"
        nonce = secrets.token_hex(8)
        return expires + nonce + self._mac(package_id, subject, expires, nonce)

    def package_for_token(
        self, package_id: str, token: str, now: float, *, subject: str = ""
    ) -> Package | None:
        """The package a valid token (issued for this package and subject) opens, or None."""
        if len(token) != _TOKEN_LENGTH or not all(c in "0123456789abcdef" for c in token):
            return None
        expires, nonce, mac = token[:10], token[10:26], token[26:]
        if not hmac.compare_digest(mac, self._mac(package_id, subject, expires, nonce)):
            return None
        if int(expires, 16) < now:
            return None
        return self.packages.get(package_id)

    def _mac(self, package_id: str, subject: str, expires: str, nonce: str) -> str:
        message = "\n".join((package_id, subject, expires, nonce)).encode()
        return hmac.new(self._token_key, message, hashlib.sha256).hexdigest()

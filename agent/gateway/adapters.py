"""Child adapters: how the gateway talks to its children (a handler executable, or simulated).

The ``exec`` adapter runs the executable configured for the child's type with one JSON request
on stdin and reads one JSON object from stdout (the command handlers' contract)::

    {"op": "install", "child": {...}, "image": "/path", "version": "2.0", "target": "firmware"}
    {"op": "versions", "child": {...}}                 -> {"fw_version": "...", "sw_version": "..."}
    {"op": "command", "child": {...}, "service_id": ..., "command_name": ..., "paras": {...}}
    {"op": "properties_set", "child": {...}, "services": [...]}
    {"op": "presence"}  (with ``presence = true``)   -> {"children": [{"device_id": ..., ...}]}

Output carries ``result_code`` (0 success; default from the exit status) and, for a failed
install, ``status`` (an upgrade status name) and ``description``. The simulated adapter keeps
its children's versions in memory and fails installs as configured.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.config.upgrades import ExecAdapter, SimulatedAdapter
from agent.core.errors import ExecutionError, UpgradeFailed
from agent.core.model import ChildInfo, CommandRequest, CommandResult, ResultCode, UpgradeStatus
from agent.executors.command import interpret_output
from agent.executors.process import run_process
from agent.gateway.registry import Child
from agent.profiles.base import dump_json

# One generator for every instance (simulated failures and jitter, not secrets): seeding one
# per instance from the OS costs a fleet of thousands of agents seconds.
SHARED_RNG = random.Random()  # noqa: S311

_STATUSES = {
    value
    for name, value in vars(UpgradeStatus).items()
    if name.isupper() and isinstance(value, str)
}


@dataclass(frozen=True, slots=True)
class Presence:
    """One child as its adapter sees it: who it is, whether it is online, its properties."""

    info: ChildInfo
    online: bool = True
    services: list[dict[str, Any]] | None = None


def parse_presence(paras: dict[str, Any], log: Any) -> list[Presence] | None:
    """The ``children`` list of a presence answer (entries that are not usable are logged)."""
    entries = paras.get("children")
    if not isinstance(entries, list):
        log.warning("child.adapter.presence.bad_answer", reason="'children' is not a list")
        return None
    found = []
    for index, entry in enumerate(entries):
        try:
            if not isinstance(entry, dict):
                raise TypeError("not an object")
            services = entry.get("services")
            if services is not None and not (
                isinstance(services, list) and all(isinstance(x, dict) for x in services)
            ):
                raise TypeError("'services' is not a list of objects")
            online = entry.get("online", True)
            if not isinstance(online, bool):
                raise TypeError("'online' is not true or false")
            fields = {k: entry.get(k) for k in _INFO_FIELDS if entry.get(k) is not None}
            found.append(Presence(ChildInfo(**fields), online, services))
        except (TypeError, ValueError) as exc:
            log.warning("child.adapter.presence.bad_entry", index=index, reason=str(exc)[:200])
    return found


_INFO_FIELDS = ("device_id", "node_id", "product_id", "name", "fw_version", "sw_version")


class ChildAdapter(Protocol):
    """Drives the children of one type."""

    async def install(self, child: Child, image: Path, version: str, target: str) -> None:
        """Install a verified package on a child (idempotent: may be repeated after a crash).

        Raises:
            UpgradeFailed: with the status to report for the child.
        """

    async def versions(self, child: Child) -> dict[str, str | None] | None:
        """What the child runs (``firmware``/``software``), or None when the adapter cannot tell."""

    async def command(self, child: Child, request: CommandRequest) -> CommandResult:
        """Run a command on the child."""

    async def set_properties(self, child: Child, services: list[dict[str, Any]]) -> tuple[int, str]:
        """Apply a property set on the child; returns (result code, description)."""

    async def presence(self) -> list[Presence] | None:
        """The children of this type that are there, or None when the adapter cannot tell."""


class ExecChildAdapter:
    """A :class:`ChildAdapter` backed by a handler executable."""

    def __init__(self, settings: ExecAdapter, *, allowed_dirs: list[Path], log: Any) -> None:
        self.settings = settings
        self._allowed = allowed_dirs
        self._log = log

    async def _call(self, request: dict[str, Any]) -> CommandResult:
        env = {"DEVICE_AGENT_OP": request["op"]}
        if "child" in request:
            env["DEVICE_AGENT_CHILD_ID"] = request["child"]["device_id"]
        try:
            outcome = await run_process(
                self.settings.argv,
                stdin=dump_json(request),
                env=env,
                timeout_s=self.settings.timeout_s,
                kill_grace_s=2.0,
                max_output_bytes=65536,
                allowed_dirs=self._allowed,
            )
        except ExecutionError as exc:
            return CommandResult.failure(exc.code, "adapter_unavailable", detail=exc.reason)
        if outcome.stderr_tail:
            self._log.info("child.adapter.stderr", op=request["op"], tail=outcome.stderr_tail)
        if outcome.timed_out:
            return CommandResult.failure(
                ResultCode.TIMEOUT, "timeout", timeout_s=self.settings.timeout_s
            )
        return interpret_output(outcome)

    async def install(self, child: Child, image: Path, version: str, target: str) -> None:
        """Run the ``install`` operation."""
        result = await self._call(
            {
                "op": "install",
                "child": asdict(child),
                "image": str(image),
                "version": version,
                "target": target,
            }
        )
        if result.ok:
            return
        status = result.paras.get("status")
        if status not in _STATUSES or status in (UpgradeStatus.SUCCESS, UpgradeStatus.IN_PROGRESS):
            status = UpgradeStatus.INSTALL_FAILED
        description = (
            result.paras.get("description") or result.paras.get("error") or "install failed"
        )
        raise UpgradeFailed(str(status), str(description)[:256])

    async def versions(self, child: Child) -> dict[str, str | None] | None:
        """Run the ``versions`` operation (None when it fails)."""
        result = await self._call({"op": "versions", "child": asdict(child)})
        if not result.ok:
            return None
        found = {
            "firmware": result.paras.get("fw_version"),
            "software": result.paras.get("sw_version"),
        }
        return {k: v if isinstance(v, str) else None for k, v in found.items()}

    async def command(self, child: Child, request: CommandRequest) -> CommandResult:
        """Run the ``command`` operation."""
        return await self._call(
            {
                "op": "command",
                "child": asdict(child),
                "service_id": request.service_id,
                "command_name": request.command_name,
                "paras": request.paras,
            }
        )

    async def set_properties(self, child: Child, services: list[dict[str, Any]]) -> tuple[int, str]:
        """Run the ``properties_set`` operation."""
        result = await self._call(
            {"op": "properties_set", "child": asdict(child), "services": services}
        )
        description = "success" if result.ok else str(result.paras.get("error", "failed"))
        return result.result_code, description

    async def presence(self) -> list[Presence] | None:
        """Run the ``presence`` operation (when configured; None when it fails)."""
        if not self.settings.presence:
            return None
        result = await self._call({"op": "presence", "type": self.settings.type})
        if not result.ok:
            self._log.warning(
                "child.adapter.presence.failed",
                type=self.settings.type,
                result_code=result.result_code,
                error=result.paras.get("error"),
            )
            return None
        return parse_presence(result.paras, self._log)


class SimulatedChildAdapter:
    """In-process children for the fleet simulator and tests."""

    def __init__(self, settings: SimulatedAdapter, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or SHARED_RNG
        self._versions: dict[str, dict[str, str | None]] = {}
        self.properties: dict[str, list[dict[str, Any]]] = {}
        # Which children are there: None (cannot tell) until a test or simulation says so.
        self.present: dict[str, Presence] | None = None

    async def install(self, child: Child, image: Path, version: str, target: str) -> None:
        """Take ``duration_s``; fail for listed children or at ``failure_rate``."""
        if self.settings.duration_s:
            await asyncio.sleep(self.settings.duration_s)
        if child.device_id in self.settings.fail_children or (
            self.settings.failure_rate and self._rng.random() < self.settings.failure_rate
        ):
            raise UpgradeFailed(UpgradeStatus.INSTALL_FAILED, "simulated install failure")
        self._versions.setdefault(child.device_id, {})[target] = version

    async def versions(self, child: Child) -> dict[str, str | None] | None:
        """What was installed here, else what the registry says."""
        known = self._versions.get(child.device_id)
        if known is None:
            return None
        return {
            "firmware": known.get("firmware", child.fw_version),
            "software": known.get("software", child.sw_version),
        }

    async def command(self, child: Child, request: CommandRequest) -> CommandResult:
        """Echo the command back."""
        return CommandResult(
            result_code=ResultCode.SUCCESS,
            response_name=request.command_name,
            paras={"child": child.device_id, "echo": json.loads(json.dumps(request.paras))},
        )

    async def set_properties(self, child: Child, services: list[dict[str, Any]]) -> tuple[int, str]:
        """Remember the properties."""
        self.properties[child.device_id] = services
        return 0, "success"

    async def presence(self) -> list[Presence] | None:
        """The children set in :attr:`present` (None until it is set)."""
        return None if self.present is None else list(self.present.values())

    def attach(self, presence: Presence) -> None:
        """A child appears (or changes its status or properties)."""
        if self.present is None:
            self.present = {}
        self.present[presence.info.device_id] = presence

    def detach(self, device_id: str) -> None:
        """A child is gone for good."""
        if self.present is not None:
            self.present.pop(device_id, None)

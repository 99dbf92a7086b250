"""Configuration tables for upgrades (``[upgrades]``) and gateway mode (``[gateway]``).

Kept apart from the other tables so the settings only gain two fields; they are sections like
every other (immutable, unknown keys rejected) and check programs the same way.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from agent.config.base import Section, absolute_argv

_HOST = re.compile(r"^[A-Za-z0-9.\-:\[\]]{1,253}$")
_CHILD_ID = re.compile(r"^[A-Za-z0-9_\-.:@/]{1,128}$")
_TYPE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
MIB = 1024 * 1024


class Program(Section):
    """An allow-listed executable run directly (never through a shell), with a deadline."""

    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=600.0, gt=0, le=86400)

    _argv = field_validator("argv")(absolute_argv)


# -- installers --------------------------------------------------------------------------------


class ScriptInstaller(Section):
    """An executable that installs the verified package: ``argv + [phase, image, version]``.

    ``phase`` is ``install`` (and ``confirm`` after a reboot when ``confirm`` is true). Exit 0 is
    success; ``reboot_exit_code`` means "installed, active after a reboot"; other exit codes are
    mapped by ``exit_codes`` (unlisted ones mean ``install_failed``).
    """

    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=1800.0, gt=0, le=86400)
    reboot_exit_code: int = Field(default=100, ge=1, le=255)
    # Asked to reboot when the script says the package is active only after a reboot.
    reboot: Program | None = None
    confirm: bool = False
    exit_codes: dict[str, str] = {
        "1": "device_busy",
        "5": "low_storage",
        "7": "verify_failed",
        "8": "unsupported",
    }

    _argv = field_validator("argv")(absolute_argv)

    @field_validator("exit_codes")
    @classmethod
    def _codes(cls, codes: dict[str, str]) -> dict[str, str]:
        allowed = {
            "device_busy",
            "low_storage",
            "verify_failed",
            "unsupported",
            "install_failed",
            "internal",
        }
        for code, status in codes.items():
            if not code.isdigit() or not 1 <= int(code) <= 255 or status not in allowed:
                msg = (
                    f"exit code {code!r} -> {status!r}: codes are 1-255, statuses {sorted(allowed)}"
                )
                raise ValueError(msg)
        return codes


class AbSlotsInstaller(Section):
    """Two slots (block devices or files): write the inactive one, switch, confirm or roll back."""

    slots: list[Path] = Field(min_length=2, max_length=2)
    # The agent's record of what each slot holds and which one boots next (written atomically).
    state_file: Path
    # Optional programs (through a privileged helper when the agent is sandboxed):
    # switch: argv + [slot index, slot path] makes that slot boot next (boot loader env);
    # reboot: reboots the device; health: exit 0 when the new version works.
    switch: Program | None = None
    reboot: Program | None = None
    health: Program | None = None
    # Where the running boot's identity is read; a change means the device rebooted.
    boot_id_file: Path = Path("/proc/sys/kernel/random/boot_id")
    confirm_timeout_s: float = Field(default=600.0, gt=0, le=86400)
    health_interval_s: float = Field(default=10.0, gt=0, le=3600)


class SimulatedInstaller(Section):
    """In-process stand-in (fleet simulator): takes ``duration_s``, fails at ``failure_rate``.

    It installs nothing and reports success: accepted only with ``rehearsal_only = true``,
    which the simulator's generated configurations set.
    """

    rehearsal_only: bool = False
    duration_s: float = Field(default=0.0, ge=0, le=3600)
    failure_rate: float = Field(default=0.0, ge=0, le=1)


def _inside(path: Path, directory: Path) -> bool:
    return Path(os.path.normpath(path)).is_relative_to(os.path.normpath(directory))


class SelfUpdateSettings(Section):
    """The agent updating itself: an upgrade whose package is a device-agent ``.deb``.

    Such a package goes to the privileged installer (``privileged-serve``, as root), which runs
    dpkg; the restarted agent must reach READY and confirm within ``confirm_timeout_s`` or the
    previous package is reinstalled (docs/upgrades.md).
    """

    enabled: bool = False
    # The agent's state directory, where requests and answers pass (install-requests/, ...).
    privileged_dir: Path = Path("/var/lib/device-agent")
    # Root's own directory; the journal names the previous package kept there.
    installer_dir: Path = Path("/var/lib/device-agent-installer")
    confirm_timeout_s: float = Field(default=300.0, ge=1, le=3600)
    # The handover (dpkg's run, the service's restart) and each question to root at most this.
    handover_timeout_s: float = Field(default=1800.0, gt=0, le=7200)


class UpgradeSettings(Section):
    """Firmware/software upgrades of this device (and, with ``[gateway]``, of its children)."""

    enabled: bool = False
    state_dir: Path = Path("/var/lib/device-agent/upgrades")
    # What this device runs before the agent has installed anything itself.
    firmware_version: str = "0"
    software_version: str = "0"
    # Which installer turns a verified package into the running version; its settings are in
    # the table of the same name ([upgrades.script], [upgrades.ab_slots], [upgrades.simulated]).
    # No default: with upgrades enabled it must be named (simulated only for rehearsals).
    installer: Literal["script", "ab-slots", "simulated"] | None = None
    script: ScriptInstaller | None = None
    ab_slots: AbSlotsInstaller | None = None
    simulated: SimulatedInstaller = SimulatedInstaller()
    # Plain http is refused except for these hosts (a local simulator, a LAN mirror).
    allow_http_hosts: list[str] = []
    # Redirects stay on the offer's host unless they go to one of these (over https only).
    redirect_hosts: list[str] = []
    max_redirects: int = Field(default=5, ge=0, le=20)
    # An offer without a digest to check (no ``sign``, no md5sum, no signed manifest) is
    # refused unless its URL's host is listed here.
    allow_unsigned_hosts: list[str] = []
    ca_file: Path | None = None
    max_package_bytes: int = Field(default=2048 * MIB, ge=1, le=64 * 1024 * MIB)
    # Free space kept on the state directory's file system beyond the package itself.
    reserve_bytes: int = Field(default=16 * MIB, ge=0)
    # Wall-clock deadlines, whatever the server does: the whole package (across retries and
    # restarts), and each attempt (one request with its redirects; a failure worth retrying).
    download_timeout_s: float = Field(default=4 * 3600.0, gt=0, le=7 * 86400)
    attempt_timeout_s: float = Field(default=1800.0, gt=0, le=7 * 86400)
    # All bytes received for one package, across retries and restarts, at most this times its
    # size (or times max_package_bytes when no size is announced).
    byte_budget_factor: float = Field(default=3.0, ge=1.0, le=100.0)
    max_attempts: int = Field(default=10, ge=1, le=1000)
    backoff_initial_s: float = Field(default=1.0, gt=0, le=600)
    backoff_max_s: float = Field(default=60.0, gt=0, le=3600)
    connect_timeout_s: float = Field(default=15.0, gt=0, le=600)
    read_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    chunk_bytes: int = Field(default=256 * 1024, ge=4096, le=16 * MIB)
    # Progress: one report per this many percent within a phase, and at most one per
    # ``report_interval_s`` per device (the final result is never held back).
    progress_step: int = Field(default=10, ge=1, le=100)
    report_interval_s: float = Field(default=1.0, ge=0, le=3600)
    # Progress before the package is downloaded and verified (``checking``, ``downloading``,
    # ``verifying``). Unset: the platform's default, off for Huawei (its FAQ: once a result is
    # reported the upgrade counts as finished and a new download fails), on for Tencent (whose
    # OTA document defines the ``downloading`` state with a percentage). See docs/upgrades.md.
    report_download_progress: bool | None = None
    # Ed25519 public keys (PEM files). With any configured, every package needs a manifest
    # signed by one of them (see docs/upgrades.md).
    public_keys: list[Path] = []
    # Gateway mode: children installed at the same time from one downloaded package.
    install_concurrency: int = Field(default=4, ge=1, le=256)
    # A package that is a device-agent .deb updates the agent itself.
    self_update: SelfUpdateSettings = SelfUpdateSettings()

    @field_validator("allow_http_hosts", "redirect_hosts", "allow_unsigned_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not _HOST.fullmatch(host):
                msg = f"{host!r} is not a host name or address"
                raise ValueError(msg)
        return [h.lower() for h in hosts]

    @model_validator(mode="after")
    def _consistent(self) -> UpgradeSettings:
        if self.backoff_initial_s > self.backoff_max_s:
            msg = "backoff_initial_s must not exceed backoff_max_s"
            raise ValueError(msg)
        if self.enabled and self.installer is None and not self.self_update.enabled:
            msg = (
                "upgrades.installer is required when upgrades are enabled:"
                " 'script' or 'ab-slots' (there is no default), unless the only packages are"
                " the agent's own (upgrades.self_update.enabled = true)"
            )
            raise ValueError(msg)
        if self.installer == "simulated" and not self.simulated.rehearsal_only:
            msg = (
                "upgrades.installer = 'simulated' installs nothing and reports success: it needs"
                " upgrades.simulated.rehearsal_only = true (rehearsals and the simulator only)"
            )
            raise ValueError(msg)
        if self.self_update.enabled and not _inside(
            self.state_dir, self.self_update.privileged_dir
        ):
            # Root installs only images inside the directory it serves requests from.
            msg = (
                f"upgrades.state_dir ({self.state_dir}) must lie inside"
                f" upgrades.self_update.privileged_dir ({self.self_update.privileged_dir})"
            )
            raise ValueError(msg)
        if self.installer == "script" and self.script is None:
            msg = "installer = 'script' needs an [upgrades.script] table"
            raise ValueError(msg)
        if self.installer == "ab-slots" and self.ab_slots is None:
            msg = "installer = 'ab-slots' needs an [upgrades.ab_slots] table"
            raise ValueError(msg)
        return self


# -- gateway -----------------------------------------------------------------------------------


class ExecAdapter(Section):
    """A handler executable for one child type: one JSON request on stdin, JSON on stdout."""

    type: str
    kind: Literal["exec"] = "exec"
    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=600.0, gt=0, le=86400)
    # The handler answers the ``presence`` operation (which children are there and online).
    presence: bool = False

    _argv = field_validator("argv")(absolute_argv)


class SimulatedAdapter(Section):
    """In-process children (fleet simulator, tests): installs take ``duration_s``."""

    type: str
    kind: Literal["simulated"] = "simulated"
    duration_s: float = Field(default=0.0, ge=0, le=3600)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    # Children whose installs always fail (deterministic failures for rehearsals).
    fail_children: list[str] = []


def _adapter_kind(value: object) -> str | None:
    if isinstance(value, dict):
        return str(value.get("kind", "exec"))
    return getattr(value, "kind", None)


Adapter = Annotated[
    Annotated[ExecAdapter, Tag("exec")] | Annotated[SimulatedAdapter, Tag("simulated")],
    Discriminator(_adapter_kind),
]


class ChildSettings(Section):
    """A child device known from the configuration."""

    device_id: str
    type: str = "default"
    node_id: str | None = None
    product_id: str | None = None
    fw_version: str | None = None
    sw_version: str | None = None

    @field_validator("device_id")
    @classmethod
    def _child_id(cls, value: str) -> str:
        if not _CHILD_ID.fullmatch(value):
            msg = "must be 1-128 characters of letters, digits and _ - . : @ /"
            raise ValueError(msg)
        return value


class GatewaySettings(Section):
    """Gateway mode: children, the adapters that drive them, and task grouping."""

    enabled: bool = False
    children: list[ChildSettings] = []
    # One adapter per child type; children the platform adds get their type from
    # ``product_types`` (by product id) or ``default_type``.
    adapters: list[Adapter] = []
    product_types: dict[str, str] = {}
    default_type: str = "default"
    # How long after a task's first child event its missing children are reported failed.
    task_deadline_s: float = Field(default=1800.0, gt=0, le=7 * 86400)
    # Report the versions of every child after each (re)connect (Tencent needs it; harmless).
    report_child_versions: bool = True
    # How often adapters that can tell are asked which children are present and online
    # (always after a connect; 0: only then).
    presence_interval_s: float = Field(default=60.0, ge=0, le=86400)
    # Ask the platform to add children an adapter discovers and to delete those it no longer
    # lists (Huawei IoTDA; never children from the configuration).
    manage_children: bool = False

    @field_validator("adapters")
    @classmethod
    def _types(cls, adapters: list[Adapter]) -> list[Adapter]:
        seen: set[str] = set()
        for adapter in adapters:
            if not _TYPE.fullmatch(adapter.type):
                msg = f"child type {adapter.type!r} must be 1-64 letters, digits, _ or -"
                raise ValueError(msg)
            if adapter.type in seen:
                msg = f"child type {adapter.type!r} has two adapters"
                raise ValueError(msg)
            seen.add(adapter.type)
        return adapters

    def adapter_types(self) -> set[str]:
        """The child types that have an adapter."""
        return {adapter.type for adapter in self.adapters}

    @model_validator(mode="after")
    def _children_have_adapters(self) -> GatewaySettings:
        if not self.enabled:
            return self
        seen: set[str] = set()
        for child in self.children:
            if child.device_id in seen:
                msg = f"child {child.device_id!r} is listed twice"
                raise ValueError(msg)
            seen.add(child.device_id)
        wanted = [(f"child {c.device_id!r}", c.type) for c in self.children]
        wanted += [(f"product {p!r}", t) for p, t in self.product_types.items()]
        wanted.append(("default_type", self.default_type))
        types = self.adapter_types()
        for what, kind in wanted:
            if kind not in types:
                msg = f"{what} has type {kind!r}, which has no adapter in gateway.adapters"
                raise ValueError(msg)
        return self

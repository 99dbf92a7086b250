"""Scenario files: the fleet to simulate, the faults to inject and the batch tasks to submit.

A scenario is TOML. ``[fleet]`` lists cohorts of devices (and gateways with children), the
simulated handlers they run and the faults to inject; each ``[[tasks]]`` entry is one batch task
in its API's own request shape (``body`` for JSON APIs, ``form`` for the older Tencent form),
submitted ``at_s`` seconds after the fleet is connected.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.core.errors import ConfigError

Api = Literal[
    "huawei-iotda", "tencent-iothub", "tencent-iothub-v2", "oceanconnect", "tencent-wedata"
]
PROFILES_IN_BUILD = frozenset({"huawei-iotda", "tencent-iothub", "oceanconnect"})


class Spec(BaseModel):
    """Base: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class HandlerSpec(Spec):
    """A simulated command handler every agent of the fleet routes to."""

    command_name: str = Field(min_length=1)
    service_id: str | None = None
    latency_s: float = Field(default=0.0, ge=0, le=3600)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    fail_first: int = Field(default=0, ge=0, le=100)  # first N runs on each device fail


class ApplierSpec(Spec):
    """A simulated desired-state applier for one section (a Huawei service, a Tencent key)."""

    section: str = Field(min_length=1)
    latency_s: float = Field(default=0.0, ge=0, le=3600)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    fail_first: int = Field(default=0, ge=0, le=100)


class CohortSpec(Spec):
    """``count`` devices named ``{name}-{index:05d}`` (gateways: with ``children`` each)."""

    name: str = Field(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9_\-]+$")
    count: int = Field(ge=0, le=100_000)
    profile: Literal["huawei-iotda", "tencent-iothub", "oceanconnect"] = "huawei-iotda"
    product_id: str = "sim-product"
    group: str | None = None  # group name (default: the cohort name); children: "{group}-children"
    children: int = Field(default=0, ge=0, le=1000)  # > 0 makes each device a gateway
    attrs: dict[str, str] = {}  # OceanConnect deviceType/manufacturerId/model/location

    @model_validator(mode="after")
    def _tencent_product(self) -> CohortSpec:
        if self.profile == "tencent-iothub" and not re.fullmatch(
            r"[A-Za-z0-9]{1,32}", self.product_id
        ):
            msg = "a tencent-iothub cohort needs a product_id of 1-32 letters and digits"
            raise ValueError(msg)
        if self.profile != "huawei-iotda" and self.children:
            msg = "gateways with children are simulated for huawei-iotda cohorts only"
            raise ValueError(msg)
        return self

    @property
    def group_name(self) -> str:
        """The group this cohort's devices join."""
        return self.group or self.name


class WorkflowSpec(Spec):
    """A WeData workflow bound to a device group."""

    workflow_id: str = Field(min_length=1)
    project_id: str = Field(min_length=1)
    group: str = Field(min_length=1)


class FaultSpec(Spec):
    """Faults spread evenly (with jitter) over ``[start_s, start_s + spread_s]``."""

    agent_kills: int = Field(default=0, ge=0, le=100_000)
    broker_restarts: int = Field(default=0, ge=0, le=1000)
    network_flaps: int = Field(default=0, ge=0, le=1000)
    start_s: float = Field(default=1.0, ge=0)
    spread_s: float = Field(default=10.0, ge=0)
    kill_down_s: float = Field(default=0.5, ge=0, le=600)  # a killed agent restarts after this
    flap_down_s: float = Field(default=1.0, ge=0, le=600)  # the network stays cut this long
    seed: int = 1


class UpgradeSpec(Spec):
    """Upgrades on the fleet's agents: the versions they start with and how installs behave.

    Devices install with the agent's ``simulated`` installer, a gateway's children through the
    ``simulated`` child adapter; both take their time and fail as configured here.
    """

    enabled: bool = True
    fw_version: str = Field(default="1.0.0", min_length=1, max_length=64)
    sw_version: str = Field(default="1.0.0", min_length=1, max_length=64)
    install_s: float = Field(default=0.0, ge=0, le=3600)  # devices: one install takes this long
    failure_rate: float = Field(default=0.0, ge=0, le=1)  # devices: installs that fail
    child_install_s: float = Field(default=0.0, ge=0, le=3600)  # children: per child
    child_failure_rate: float = Field(default=0.0, ge=0, le=1)
    # Children whose installs always fail (exact counts for rehearsals), by device id.
    fail_children: list[str] = []
    install_concurrency: int = Field(default=4, ge=1, le=256)  # children at once per gateway
    # A gateway reports the children of a task that never got their event after this long.
    task_deadline_s: float = Field(default=1800.0, gt=0, le=7 * 86400)


class FleetSpec(Spec):
    """The simulated fleet."""

    cohorts: list[CohortSpec] = [CohortSpec(name="device", count=100)]
    handlers: list[HandlerSpec] = []
    appliers: list[ApplierSpec] = []  # desired state (updateDeviceShadows, UpdateShadow)
    workflows: list[WorkflowSpec] = []
    upgrades: UpgradeSpec = UpgradeSpec()
    faults: FaultSpec = FaultSpec()
    connect_concurrency: int = Field(default=64, ge=1, le=10_000)
    # SUBSCRIBE exchanges in flight across the fleet (None: as many as connect). On NATS each
    # filter is a JetStream consumer the cluster must create within 4 s: bound them.
    subscribe_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    max_concurrent_subtasks: int = Field(default=16, ge=1, le=4096)
    journal: Literal["sqlite", "memory"] = "sqlite"


TaskStatus = Literal["Success", "PartialSuccess", "Fail", "Stopped"]


class ExpectSpec(Spec):
    """What a task must end as for the run to pass (``simulate`` exits 1 otherwise)."""

    status: TaskStatus | list[TaskStatus] | None = None  # one of these statuses
    min_success_ratio: float | None = Field(default=None, ge=0, le=1)  # success / total

    @model_validator(mode="after")
    def _something(self) -> ExpectSpec:
        if self.status is None and self.min_success_ratio is None:
            msg = "expect needs `status`, `min_success_ratio` or both"
            raise ValueError(msg)
        return self

    @property
    def statuses(self) -> list[str]:
        """The accepted statuses (empty: any)."""
        if self.status is None:
            return []
        return [self.status] if isinstance(self.status, str) else list(self.status)


class TaskSpec(Spec):
    """One batch task, in its API's request shape."""

    name: str = Field(min_length=1)
    api: Api
    at_s: float = Field(default=0.0, ge=0)
    project_id: str = "sim-project"  # Huawei IoTDA path parameter
    body: dict[str, Any] = {}
    form: dict[str, Any] = {}  # tencent-iothub-v2: form fields (objects are sent as JSON)
    skip_if_unavailable: bool = False  # demo use: leave out types this build cannot carry out
    # Without an expectation the task only has to end within the scenario's timeout_s.
    expect: ExpectSpec | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> TaskSpec:
        if (self.api == "tencent-iothub-v2") != bool(self.form) or (
            self.api != "tencent-iothub-v2" and not self.body
        ):
            msg = "tencent-iothub-v2 tasks take `form`, the others `body`"
            raise ValueError(msg)
        return self


class PackageSpec(Spec):
    """An OTA package uploaded before the tasks; tasks name it as ``${package:NAME}``."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-.]+$")
    version: str = Field(min_length=1)
    package_type: Literal["firmwarePackage", "softwarePackage"] = "firmwarePackage"
    size_kb: int = Field(default=64, ge=1, le=1024 * 1024)
    # "obs": devices get *_upgrade_v2 events with a pre-signed URL instead of an access token.
    location: Literal["iotda", "obs"] = "iotda"


class Scenario(Spec):
    """A whole simulation."""

    name: str = "scenario"
    description: str = ""
    # auto (embedded for small fleets, else Mosquitto) | embedded | mosquitto | mqtt://host:port
    broker: str = "auto"
    timeout_s: float = Field(default=300.0, gt=0, le=86400)
    minute_s: float = Field(default=60.0, gt=0, le=60)  # the APIs' minutes, in seconds
    command_timeout_s: float = Field(default=20.0, gt=0, le=86400)
    # IoTDA upgrades: waits for the version report (3 minutes) and for the result (24 hours).
    version_timeout_s: float = Field(default=180.0, gt=0, le=86400)
    upgrade_timeout_s: float = Field(default=86400.0, gt=0, le=7 * 86400)
    # The emulator is strict unless told otherwise (docs/simulator.md, "Strict emulator"):
    # upgrades wait this long for an offline device (IoTDA: 25 hours).
    online_timeout_s: float = Field(default=90000.0, gt=0, le=7 * 86400)
    lenient: bool = False
    children_follow_gateway: bool = False
    strict_faq: bool = False
    fleet: FleetSpec = FleetSpec()
    packages: list[PackageSpec] = []
    tasks: list[TaskSpec] = []


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file.

    Raises:
        ConfigError: naming each bad key.
    """
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError([(str(path), None, f"cannot read: {exc.strerror}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(path), None, f"not valid TOML: {exc}")]) from exc
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [
            (".".join(str(p) for p in e["loc"]) or "(top level)", e.get("input"), e["msg"])
            for e in exc.errors(include_url=False)
        ]
        raise ConfigError(problems) from exc

"""The emulator's records: tasks, subtasks and devices, and how task status follows from subtasks.

Tasks and subtasks are mutable dataclasses rather than frozen models: the engine moves tens of
thousands of subtasks through their states, and every move must be one attribute write plus a
counter update (slots keep a 10,000-subtask task small).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Subtask states, in the Huawei IoTDA vocabulary (TaskProgress field names, "waitting" included).
WAITTING = "waitting"
PROCESSING = "processing"
SUCCESS = "success"
FAIL = "fail"
FAIL_WAIT_RETRY = "fail_wait_retry"
STOPPED = "stopped"
REMOVED = "removed"
STATES = (PROCESSING, SUCCESS, FAIL, WAITTING, FAIL_WAIT_RETRY, STOPPED, REMOVED)
TERMINAL = frozenset({SUCCESS, FAIL, STOPPED, REMOVED})

# Task status values (Huawei IoTDA; the other APIs map them onto their own vocabulary).
INITIALIZING = "Initializing"
TASK_WAITTING = "Waitting"
TASK_PROCESSING = "Processing"
TASK_SUCCESS = "Success"
TASK_FAIL = "Fail"
TASK_PARTIAL = "PartialSuccess"
TASK_STOPPED = "Stopped"
TASK_STOPPING = "Stopping"
TASK_FINISHED = frozenset({TASK_SUCCESS, TASK_FAIL, TASK_PARTIAL, TASK_STOPPED})

# The APIs a task can come from.
HUAWEI_IOTDA = "huawei-iotda"
TENCENT_IOTHUB = "tencent-iothub"
OCEANCONNECT = "oceanconnect"
TENCENT_WEDATA = "tencent-wedata"


@dataclass(slots=True)
class Subtask:
    """One target device's share of a task."""

    task_id: str
    seq: int
    device_id: str
    state: str = WAITTING
    attempts: int = 0  # dispatches made so far
    correlation: str | None = None  # request id of the attempt in flight
    stage: str | None = None  # where a multi-step attempt is (upgrades: version, upgrade)
    progress: int = 0  # 0-100, as the device last reported it (upgrades)
    due: float = 0.0  # when a waiting (or retry-waiting) subtask may be dispatched
    deadline: float | None = None  # when the attempt in flight counts as failed
    dispatched_at: float | None = None  # first dispatch
    finished_at: float | None = None
    error_code: str | None = None
    error_msg: str | None = None
    output: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, int]:
        """Identity within the emulator."""
        return (self.task_id, self.seq)


@dataclass(slots=True)
class Task:
    """A batch task as the emulator keeps it."""

    task_id: str
    api: str
    task_type: str
    name: str
    account: str
    created_at: float
    schedule_at: float
    request: dict[str, Any]  # the request as accepted (shown back by the APIs)
    retry_count: int = 0
    retry_interval_s: float = 0.0
    attempt_timeout_s: float | None = None  # per dispatch; None: the dispatcher's default
    max_execution_s: float | None = None  # whole task, from schedule time
    stop_requested: bool = False
    status_desc: str = ""
    finished_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))

    @property
    def total(self) -> int:
        """Number of subtasks."""
        return sum(self.counts.values())

    @property
    def terminal(self) -> int:
        """Subtasks that have ended."""
        return sum(self.counts[s] for s in TERMINAL)

    def progress(self) -> dict[str, int]:
        """``task_progress`` as the Huawei API shows it; the parts always add up to ``total``."""
        return {"total": self.total, **{state: self.counts[state] for state in STATES}}

    def status(self, now: float) -> str:
        """The task status, derived from its subtasks (never stored, so it cannot drift)."""
        open_count = self.total - self.terminal
        if self.stop_requested:
            return TASK_STOPPING if open_count else TASK_STOPPED
        if open_count:
            if now < self.schedule_at and self.counts[WAITTING] == open_count:
                return TASK_WAITTING
            return TASK_PROCESSING
        succeeded = self.counts[SUCCESS]
        if succeeded and succeeded == self.total:
            return TASK_SUCCESS
        return TASK_PARTIAL if succeeded else TASK_FAIL


@dataclass(slots=True)
class Device:
    """A device in the emulator's registry (any platform)."""

    device_id: str
    platform: str = HUAWEI_IOTDA
    product_id: str = ""
    name: str = ""  # Tencent device name / Huawei node id
    gateway_id: str | None = None  # set for a child device
    frozen: bool = False
    secret: str = ""
    attrs: dict[str, str] = field(default_factory=dict)  # device_type, model, location, ...
    created_at: float = 0.0  # when the registry got it (0: registered in bulk by the simulator)

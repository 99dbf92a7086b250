"""The per-task-type seam: how one subtask reaches its device and how its end is decided.

A dispatcher exists for every task type the APIs accept. Three shapes:

* :class:`MqttDispatcher`: builds the subtask's downlink with the platform side of the same
  profile codec the agent uses, reads the device's answer and turns it into a :class:`Verdict`
  (or, for fire-and-forget types, succeeds once the broker has the downlink). A
  :class:`Conversation` is an MQTT dispatcher whose attempts take several exchanges (an
  upgrade: version query, then the upgrade event, then progress reports): the reader hands it
  :class:`Report` objects and it answers each with a verdict, a :class:`Step` (the next stage,
  or progress) or nothing;
* :class:`LocalDispatcher`: work the task service does itself (registry operations);
* :class:`Unavailable`: a type whose device side is not in this build (or not on MQTT at all);
  its subtasks end at once as a failure saying so.

When a profile lands, its platform side gets a dispatcher here and the table in
:mod:`agent.sim.emulator.dispatchers` points the task type at it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from agent.core.model import Publish
from agent.sim.emulator.records import Device, Subtask, Task
from agent.sim.emulator.registry import Registry

# error_code of subtasks whose task type has no device side in this build.
UNAVAILABLE = "DEVICE_SIDE_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one attempt of a subtask ended."""

    ok: bool
    error_code: str | None = None
    error_msg: str | None = None
    output: dict[str, Any] | None = None

    @classmethod
    def failed(cls, code: str, message: str, output: dict[str, Any] | None = None) -> Verdict:
        """A failed attempt."""
        return cls(ok=False, error_code=code, error_msg=message, output=output)


class DeviceOffline(Exception):
    """The device cannot take the downlink now (a gateway child not reported online).

    Raised by ``downlinks``: with ``hold`` the attempt stays in flight and is built again when
    the dispatcher resends (``resend_every_s``) or the link reconnects, until its deadline;
    without it the attempt fails at once with ``code``.
    """

    def __init__(self, message: str, *, code: str = "DeviceOffline", hold: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hold = hold


@dataclass(frozen=True, slots=True)
class Answer:
    """A device's answer to the attempt with request id ``correlation``."""

    correlation: str
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Report:
    """A device's uplink about the attempt ``correlation``, for its dispatcher to interpret."""

    correlation: str
    data: Any


@dataclass(frozen=True, slots=True)
class Step:
    """A multi-step attempt moves on: a new stage (sent at once, with a new deadline), progress."""

    stage: str | None = None
    progress: int | None = None


class UplinkReader(Protocol):
    """Reads one platform's device uplinks (one reader serves all of that platform's types)."""

    name: str

    def filters(self) -> list[str]:
        """Topic filters the task service subscribes to for this platform."""

    def read(
        self, topic: str, payload: bytes
    ) -> Answer | Report | list[Answer] | list[Report] | None:
        """The answer(s) in an uplink, or None when the uplink answers nothing.

        Raises:
            RemoteProtocolError: the uplink looks like an answer but is malformed.
        """


@runtime_checkable
class MqttDispatcher(Protocol):
    """A task type delivered to devices over MQTT."""

    timeout_s: float  # how long one attempt waits for its answer, unless the task says
    fire_and_forget: bool  # success once the broker acknowledges the downlink
    reader: UplinkReader | None

    def downlinks(
        self, task: Task, subtask: Subtask, device: Device, correlation: str
    ) -> list[Publish]:
        """The publications that carry one attempt of a subtask to its device.

        None at all means there is nothing to deliver (the device is already there): the
        attempt succeeds. A dispatcher whose answers cannot carry the engine's request id has
        a ``correlate(task, subtask, device) -> str | None`` method naming the one they carry.
        """


@runtime_checkable
class Conversation(MqttDispatcher, Protocol):
    """An MQTT dispatcher whose attempts go through stages (``subtask.stage``).

    ``downlinks`` builds the current stage's publications (so a redelivery after a reconnect or
    an emulator restart repeats the stage the attempt is in); each stage has its own deadline.
    """

    def interpret(self, task: Task, subtask: Subtask, report: Report) -> Verdict | Step | None:
        """What a device's report means for the attempt in flight (None: nothing)."""

    def stage_timeout(self, task: Task, subtask: Subtask) -> float:
        """How long the attempt's current stage waits for the device."""

    def timeout_message(self, subtask: Subtask, waited: float) -> str:
        """Why the attempt failed when its stage's deadline passed."""


@dataclass(frozen=True, slots=True)
class LocalContext:
    """What local work may touch: the registry, the MQTT link, the clock."""

    registry: Registry
    publish: Callable[[Publish], Awaitable[None]]
    now: float


@runtime_checkable
class LocalDispatcher(Protocol):
    """A task type the task service carries out itself."""

    needs_device: bool  # False when the subtask's target does not exist yet (createDevices)

    async def run(self, task: Task, subtask: Subtask, ctx: LocalContext) -> Verdict:
        """Carry out one subtask."""


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A task type accepted by the API whose subtasks cannot be carried out: they fail at once."""

    reason: str
    code: str = UNAVAILABLE

    def verdict(self) -> Verdict:
        """The failure every subtask of this type ends with."""
        return Verdict.failed(self.code, self.reason)


Dispatcher = MqttDispatcher | LocalDispatcher | Unavailable

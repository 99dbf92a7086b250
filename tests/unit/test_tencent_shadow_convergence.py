"""A Tencent shadow task ends after a lost report: the device side against the platform's shadow.

The codec, the desired-state executor and the platform's shadow model, played step by step
without a broker. The platform's ``UpdateShadow`` succeeds once the reported half holds the
desired change; a report that clears ``desired`` without holding it leaves the task waiting
and every later copy of the report (the stored answer sent again for each re-pushed delta) is
refused with 5005: the loop seen after an agent was killed.
"""

from __future__ import annotations

import json
from typing import Any

from agent.config import CommandSettings, DesiredStateSettings
from agent.core.merge_patch import pending
from agent.core.model import DesiredState, DesiredStateResult
from agent.executors.desired import DesiredStateExecutor
from agent.journal.memory import MemoryJournal
from agent.pipeline.executor import Context, Outcome
from agent.profiles.tencent_iothub import TencentIothubPlatform, TencentIothubProfile
from agent.sim.shadows import TencentShadow
from tests.support.recording import RecordingLog, RecordingUplink

PID, DN = "DOORS00001", "door-00016"
LOCK = {"lock": "engaged"}


class _Device:
    """One agent run: codec and executor over a journal that outlives it."""

    def __init__(self, journal: MemoryJournal) -> None:
        settings = DesiredStateSettings.model_validate(
            {"appliers": [{"section": "lock", "handler": {"kind": "simulated"}}]}
        )
        self.profile = TencentIothubProfile(PID, DN, desired_state=True)
        self.executor = DesiredStateExecutor(
            settings, CommandSettings(), journal, agent_id=self.profile.device_id
        )
        self.ctx = Context(
            agent_id=self.profile.device_id,
            received_at=0.0,
            log=RecordingLog(),
            uplink=RecordingUplink(),  # type: ignore[arg-type]
        )

    def decode(self, payload: bytes) -> DesiredState:
        event = self.profile.decode(self.profile.shadow_down, payload)
        assert isinstance(event, DesiredState)
        return event


def _report(shadow: TencentShadow, device: _Device, outcome: Outcome) -> int:
    """Send the outcome's report to the shadow service; its result code."""
    (result,) = outcome.replies
    assert isinstance(result, DesiredStateResult)
    (publish,) = device.profile.encode(result)
    platform = TencentIothubPlatform(PID, DN)
    reply = shadow.handle(platform.decode_uplink(publish.topic, publish.payload), now=2)
    return int(json.loads(reply.payload)["result"])


def _holds(shadow: TencentShadow, change: dict[str, Any]) -> bool:
    """The emulator's success rule for ``UpdateShadow``: reported holds the change."""
    return not pending(change, shadow.reported)


async def test_a_recovered_delta_reports_what_it_applied_though_the_record_has_it() -> None:
    """Killed after recording the applied value, before the report left: recovery reports it."""
    journal = MemoryJournal()
    shadow = TencentShadow(PID, DN)
    delta = shadow.set_desired(LOCK, now=1)
    assert delta is not None
    first = _Device(journal)
    subtask = first.decode(delta.payload)
    await first.executor.execute(subtask, first.ctx)  # applied and recorded; report lost

    restarted = _Device(journal)
    recovered = await restarted.executor.recover(subtask, "running", restarted.ctx)

    assert _report(shadow, restarted, recovered) == 0
    assert _holds(shadow, LOCK)
    assert shadow.desired is None


async def test_a_new_delta_of_a_value_applied_before_is_reported() -> None:
    """The platform pushes a value the agent applied but never got reported: it is reported."""
    journal = MemoryJournal()
    shadow = TencentShadow(PID, DN)
    device = _Device(journal)
    first = shadow.set_desired(LOCK, now=1)
    assert first is not None
    await device.executor.execute(device.decode(first.payload), device.ctx)  # report lost
    again = shadow.set_desired(LOCK, now=2)  # the same change as a new version
    assert again is not None

    outcome = await device.executor.execute(device.decode(again.payload), device.ctx)

    assert _report(shadow, device, outcome) == 0
    assert _holds(shadow, LOCK)

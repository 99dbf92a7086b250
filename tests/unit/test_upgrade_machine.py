"""The upgrade state machine's table: legal moves only, and phases that never go back."""

from __future__ import annotations

import pytest

from agent.core.errors import IllegalTransition
from agent.upgrade import machine
from agent.upgrade.steps import is_plain_file_name


def test_the_happy_path_walks_every_phase_in_order() -> None:
    """Received -> ... -> done through the reboot, each step legal."""
    m = machine.UpgradeMachine()
    for event in ("start", "needed", "downloaded", "verified", "installed", "needs_reboot"):
        m.fire(event)
    assert m.state == machine.REBOOTING
    m.fire("rebooted")
    m.fire("confirmed")
    assert m.state == machine.DONE
    assert m.terminal


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (machine.RECEIVED, "downloaded"),
        (machine.CHECKING, "installed"),
        (machine.DOWNLOADING, "confirmed"),
        (machine.VERIFYING, "needed"),
        (machine.INSTALLING, "start"),
        (machine.CONFIRMING, "downloaded"),
        (machine.DONE, "failed"),
        (machine.FAILED, "start"),
        (machine.ROLLED_BACK, "confirmed"),
        (machine.REBOOTING, "nonsense"),
    ],
)
def test_an_illegal_transition_raises_and_leaves_the_state_unchanged(
    state: str, event: str
) -> None:
    """An edge the table lacks is an error; the machine stays where it was."""
    m = machine.UpgradeMachine(state)
    with pytest.raises(IllegalTransition) as raised:
        m.fire(event)
    assert m.state == state
    assert (raised.value.state, raised.value.event) == (state, event)


def test_an_unknown_state_cannot_be_resumed() -> None:
    """A journaled state the table does not know is refused rather than guessed."""
    with pytest.raises(IllegalTransition):
        machine.UpgradeMachine("halfway")


def test_no_transition_leads_to_an_earlier_phase() -> None:
    """Every edge keeps or raises the phase rank, so reports can only move forward."""
    for (state, _), target in machine.TRANSITIONS.items():
        assert machine.PHASE_ORDER[target] >= machine.PHASE_ORDER[state], (state, target)


def test_every_working_state_can_end() -> None:
    """From each non-terminal state a terminal one is reachable (nothing is stuck for ever)."""
    for state in machine.STATES - machine.TERMINAL:
        seen, frontier = {state}, [state]
        while frontier:
            current = frontier.pop()
            for (source, _), target in machine.TRANSITIONS.items():
                if source == current and target not in seen:
                    seen.add(target)
                    frontier.append(target)
        assert seen & machine.TERMINAL, state


def test_terminal_states_have_no_way_out() -> None:
    """done, failed and rolled_back are final."""
    assert not [s for (s, _) in machine.TRANSITIONS if s in machine.TERMINAL]


def test_every_state_that_has_not_ended_has_a_failure_edge() -> None:
    """A failure anywhere takes an edge of the table: nothing sets `failed` by hand."""
    for state in machine.STATES - machine.TERMINAL:
        target = machine.TRANSITIONS.get((state, machine.failure_event(state)))
        assert target == machine.FAILED, state


def test_device_and_child_step_tables_cover_the_states_each_can_reach() -> None:
    """Each table has a step for every working state reachable through its own events."""
    from agent.upgrade.child_steps import CHILD_STEPS
    from agent.upgrade.steps import DEVICE_STEPS

    assert set(DEVICE_STEPS) == machine.STATES - machine.TERMINAL
    # Children never reboot: their activation always ends in "active".
    assert set(CHILD_STEPS) == machine.STATES - machine.TERMINAL - {machine.REBOOTING}


@pytest.mark.parametrize(
    ("name", "plain"),
    [
        ("fw-2.0.bin", True),
        ("device-agent_1.0~rc1_amd64.deb", True),  # a Debian version's tilde
        ("pkg+build.1.tar.gz", True),
        ("../etc/passwd", False),
        ("dir/fw.bin", False),
        (".hidden", False),
        ("-rf", False),
        ("~fw.bin", False),
        ("fw bin", False),
        ("", False),
        ("a" * 256, False),
    ],
)
def test_an_offered_file_name_must_be_one_plain_name(name: str, plain: bool) -> None:
    """No path, no leading dot, dash or tilde; Debian package names pass."""
    assert is_plain_file_name(name) is plain

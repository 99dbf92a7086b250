"""The upgrade state machine: a table of legal transitions and the order phases are reported in.

The table (``TRANSITIONS``) reads: received -> checking -> downloading -> verifying ->
installing -> activating -> (rebooting ->) confirming -> done; checking may end in done (the
version is already there); any working phase may end in failed (:func:`failure_event` names
the edge); confirming that does not confirm goes rolling_back -> rolled_back. Every state change
of an upgrade takes one of these edges: there is no other way to set a state.

Each transition is journaled before the side effect it announces, so a restart resumes from
the last state written; the transition to failed carries the failure's status and reason in
the same write, so a crash right after it still reports the real reason. Phases only move forward:
:data:`PHASE_ORDER` gives the rank a report may never go below.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.core.errors import IllegalTransition

RECEIVED = "received"
CHECKING = "checking"
DOWNLOADING = "downloading"
VERIFYING = "verifying"
INSTALLING = "installing"
ACTIVATING = "activating"
REBOOTING = "rebooting"
CONFIRMING = "confirming"
ROLLING_BACK = "rolling_back"
DONE = "done"
FAILED = "failed"
ROLLED_BACK = "rolled_back"

TERMINAL = frozenset({DONE, FAILED, ROLLED_BACK})

# (state, event) -> next state. Anything not listed is illegal.
TRANSITIONS: dict[tuple[str, str], str] = {
    (RECEIVED, "start"): CHECKING,
    (RECEIVED, "failed"): FAILED,
    (CHECKING, "already_installed"): DONE,
    (CHECKING, "needed"): DOWNLOADING,
    (CHECKING, "refused"): FAILED,
    (DOWNLOADING, "downloaded"): VERIFYING,
    (DOWNLOADING, "failed"): FAILED,
    (VERIFYING, "verified"): INSTALLING,
    (VERIFYING, "failed"): FAILED,
    (INSTALLING, "installed"): ACTIVATING,
    (INSTALLING, "failed"): FAILED,
    (ACTIVATING, "active"): CONFIRMING,
    (ACTIVATING, "needs_reboot"): REBOOTING,
    (ACTIVATING, "failed"): FAILED,
    (REBOOTING, "rebooted"): CONFIRMING,
    (REBOOTING, "failed"): FAILED,
    (CONFIRMING, "confirmed"): DONE,
    (CONFIRMING, "not_confirmed"): ROLLING_BACK,
    (CONFIRMING, "failed"): FAILED,
    (ROLLING_BACK, "restored"): ROLLED_BACK,
    (ROLLING_BACK, "failed"): FAILED,
}

# The order phases are reported in; a later report never names an earlier phase.
PHASE_ORDER: dict[str, int] = {
    RECEIVED: 0,
    CHECKING: 1,
    DOWNLOADING: 2,
    VERIFYING: 3,
    INSTALLING: 4,
    ACTIVATING: 5,
    REBOOTING: 6,
    CONFIRMING: 7,
    ROLLING_BACK: 8,
    DONE: 9,
    FAILED: 9,
    ROLLED_BACK: 9,
}

STATES = frozenset(PHASE_ORDER)


def failure_event(state: str) -> str:
    """The event that ends ``state`` in failure (a refused offer, or a failed step)."""
    return "refused" if state == CHECKING else "failed"


@dataclass
class UpgradeMachine:
    """The current state of one upgrade; :meth:`fire` moves it along a legal edge only."""

    state: str = RECEIVED

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise IllegalTransition(self.state, "(resume)")

    def next_state(self, event: str) -> str:
        """Where ``event`` leads from here, without moving.

        Raises:
            IllegalTransition: the table has no such edge (the state is left as it was).
        """
        target = TRANSITIONS.get((self.state, event))
        if target is None:
            raise IllegalTransition(self.state, event)
        return target

    def fire(self, event: str) -> str:
        """Move along ``event``; returns the new state.

        Raises:
            IllegalTransition: the table has no such edge (the state is left as it was).
        """
        self.state = self.next_state(event)
        return self.state

    @property
    def terminal(self) -> bool:
        """Whether the upgrade has ended."""
        return self.state in TERMINAL

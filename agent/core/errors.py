"""The agent's exception hierarchy; third-party errors are translated into it at each boundary.

::

    AgentError
    +-- ConfigError              a configuration file or override is invalid (names key and value)
    +-- ProtocolError
    |   +-- RemoteProtocolError  the platform sent something we cannot accept; answer with a failure
    |   +-- LocalProtocolError   we tried to build something the protocol forbids (our bug)
    +-- TransportError           the MQTT connection failed or was lost
    |   +-- ConnectRefused       the broker answered CONNACK with a refusal (rc attached)
    +-- JournalError             the durable journal could not be read or written
    +-- ExecutionError           a handler, applier or installer could not do its work
    |   +-- UpgradeFailed        an upgrade step failed, with its neutral upgrade status
    +-- IllegalTransition        a state machine was asked for a transition its table forbids

The simulator's own errors live in :mod:`agent.sim.errors`.

Errors carry structured fields (``reason``, ``rc``, ``correlation``) rather than codes in strings,
so callers can answer the platform precisely and logs stay machine-readable.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """The configuration is invalid; ``problems`` lists ``(key, value, message)`` triples."""

    def __init__(self, problems: list[tuple[str, object, str]]) -> None:
        self.problems = problems
        lines = [f"{key} = {value!r}: {message}" for key, value, message in problems]
        super().__init__("invalid configuration:\n  " + "\n  ".join(lines))


class ProtocolError(AgentError):
    """A message could not be decoded or encoded under the active profile."""

    def __init__(self, reason: str, *, correlation: str | None = None) -> None:
        self.reason = reason
        self.correlation = correlation
        super().__init__(reason)


class RemoteProtocolError(ProtocolError):
    """The platform sent a message we cannot accept.

    ``reply`` is a cloud-neutral failure the dispatcher should send back when the protocol has a
    place for one (a command or property-set request whose request id could still be read), and
    ``key`` the subtask key it is journaled under, so a redelivery gets the same answer.
    """

    def __init__(
        self,
        reason: str,
        *,
        correlation: str | None = None,
        key: str | None = None,
        reply: object | None = None,
    ) -> None:
        super().__init__(reason, correlation=correlation)
        self.key = key
        self.reply = reply


class LocalProtocolError(ProtocolError):
    """We tried to produce a message the protocol does not allow."""


class TransportError(AgentError):
    """The MQTT connection failed, or an operation needs a connection that is not there."""


class ConnectRefused(TransportError):
    """The broker refused the connection; ``bad_credentials`` marks those to retry slowly."""

    def __init__(self, rc: int, reason: str, *, bad_credentials: bool) -> None:
        self.rc = rc
        self.reason = reason
        self.bad_credentials = bad_credentials
        super().__init__(f"connection refused (rc={rc}): {reason}")


class JournalError(AgentError):
    """The durable journal failed."""


class ExecutionError(AgentError):
    """A handler, applier or installer failed; ``code`` is the result code to report."""

    def __init__(self, reason: str, *, code: int) -> None:
        self.reason = reason
        self.code = code
        super().__init__(reason)


class UpgradeFailed(ExecutionError):
    """An upgrade step failed; ``status`` is an :class:`~agent.core.model.UpgradeStatus` value."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason, code=0)
        self.status = status


class IllegalTransition(AgentError):
    """A state machine was asked to move along an edge its table does not have."""

    def __init__(self, state: str, event: str) -> None:
        self.state = state
        self.event = event
        super().__init__(f"no transition from {state!r} on {event!r}")

"""Errors of the simulated task services, which each API renders in its platform's shape.

::

    AgentError
    +-- RequestInvalid   a task-service API request is malformed, mistyped or out of range
    +-- ApiRejected      a valid request the task service refuses (limits, auth, state)
"""

from __future__ import annotations

from agent.core.errors import AgentError


class RequestInvalid(AgentError):
    """A request to the simulated task service is malformed, mistyped or out of range.

    ``problem`` is ``malformed``, ``missing``, ``type`` or ``value``; each API renders it as its
    platform's error code.
    """

    def __init__(self, field: str, problem: str, message: str) -> None:
        self.field = field
        self.problem = problem
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class ApiRejected(AgentError):
    """The simulated task service refuses a well-formed request, in the API's own terms."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")

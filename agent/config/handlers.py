"""Handlers: what runs a command, a message or a desired-state section (exec, script, simulated)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from agent.config.base import Section, absolute_argv


def _check_env(env: dict[str, str]) -> dict[str, str]:
    for name, value in env.items():
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", name) or "\x00" in value:
            msg = f"environment name {name!r} must match [A-Z_][A-Z0-9_]* and values hold no NUL"
            raise ValueError(msg)
    return env


class ExecHandler(Section):
    """An allow-listed executable: ``argv`` is run directly, never through a shell."""

    kind: Literal["exec"] = "exec"
    argv: list[str] = Field(min_length=1)
    timeout_s: float | None = Field(default=None, gt=0, le=86400)
    env: dict[str, str] = {}

    _argv = field_validator("argv")(absolute_argv)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return _check_env(env)


class SimulatedHandler(Section):
    """An in-process stand-in for a handler (fleet simulator, benches): no process is started."""

    kind: Literal["simulated"] = "simulated"
    latency_s: float = Field(default=0.0, ge=0, le=3600)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    # The first N runs of this route on each device fail (rehearses retries deterministically).
    fail_first: int = Field(default=0, ge=0, le=1000)
    result_paras: dict[str, Any] = {}


class ScriptHandler(Section):
    """A script task in the vocabulary of Tencent WeData ``CreateTask``: Shell or Python.

    ``task_type`` 35 runs ``script`` with ``/bin/sh``, 30 with Python (``-I``: isolated, no
    ``PYTHON*`` variables, no user site). The script must live in an allowed directory; the
    interpreter is run from ``argv`` (never a shell command line). ``TaskExt`` key/value pairs
    of the command reach the script as ``DEVICE_AGENT_TASK_EXT_{Key}`` environment variables.
    """

    kind: Literal["script"] = "script"
    task_type: Literal[30, 35]
    script: Path
    interpreter: Path | None = None
    args: list[str] = []
    timeout_s: float | None = Field(default=None, gt=0, le=86400)
    env: dict[str, str] = {}

    @field_validator("script", "interpreter")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_absolute():
            msg = "must be an absolute path"
            raise ValueError(msg)
        return path

    @field_validator("args")
    @classmethod
    def _no_nul(cls, args: list[str]) -> list[str]:
        if any("\x00" in arg for arg in args):
            msg = "arguments must not contain NUL"
            raise ValueError(msg)
        return args

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return _check_env(env)

    @property
    def program(self) -> Path:
        """The interpreter that runs the script."""
        if self.interpreter is not None:
            return self.interpreter
        return Path("/bin/sh") if self.task_type == 35 else Path("/usr/bin/python3")

    @property
    def argv(self) -> list[str]:
        """The command line: interpreter (isolated for Python), script, arguments."""
        isolate = ["-I"] if self.task_type == 30 else []
        return [str(self.program), *isolate, str(self.script), *self.args]


def _handler_kind(value: object) -> str | None:
    """Handlers without ``kind`` are executables, the common case."""
    if isinstance(value, dict):
        return str(value.get("kind", "exec"))
    return getattr(value, "kind", None)


Handler = Annotated[
    Annotated[ExecHandler, Tag("exec")]
    | Annotated[SimulatedHandler, Tag("simulated")]
    | Annotated[ScriptHandler, Tag("script")],
    Discriminator(_handler_kind),
]

# Desired-state appliers: an executable (same contract as commands) or a simulated one.
ApplierHandler = Annotated[
    Annotated[ExecHandler, Tag("exec")] | Annotated[SimulatedHandler, Tag("simulated")],
    Discriminator(_handler_kind),
]


class CommandRoute(Section):
    """Maps a command (``service_id``, ``command_name``) to the handler that executes it."""

    service_id: str | None = None
    command_name: str = Field(min_length=1)
    handler: Handler


class CommandSettings(Section):
    """How commands are executed."""

    # Executables named by handlers must live below one of these directories.
    allowed_dirs: list[Path] = [Path("/usr/lib/device-agent/handlers")]
    # The platform waits 20 s for an answer: stop a little earlier so the failure still arrives.
    default_timeout_s: float = Field(default=18.0, gt=0, le=86400)
    kill_grace_s: float = Field(default=1.0, ge=0, le=60)
    max_output_bytes: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)
    routes: list[CommandRoute] = []

    @model_validator(mode="after")
    def _routes_unique(self) -> CommandSettings:
        seen: set[tuple[str | None, str]] = set()
        for route in self.routes:
            ident = (route.service_id, route.command_name)
            if ident in seen:
                msg = f"command {ident} is routed twice"
                raise ValueError(msg)
            seen.add(ident)
        return self

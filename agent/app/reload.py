"""SIGHUP: take what can change safely from a new configuration; say what needs a restart.

Reloaded at once: command routes and handlers and their bounds (``[commands]``), the message
spool and handler, desired-state appliers (while desired state stays on or off), ``[logging]``,
``[lifecycle]`` and the device secret file (read again; used from the next connection). Work
already running finishes with what it started with. Everything else (the identity, the broker,
the journal, ``[limits]``, custom topics, upgrades, gateway) keeps its old value until a restart,
and the reload logs which keys those are. A new configuration that is invalid, or whose secret
cannot be read, is refused as a whole and the old one stays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.app.agent import Agent
from agent.app.checks import check_environment
from agent.config import AgentConfig, load_config
from agent.core.errors import AgentError, ConfigError
from agent.executors.command import CommandExecutor
from agent.executors.desired import DesiredStateExecutor
from agent.executors.message import MessageExecutor

# Sections applied as a whole on reload.
_RELOADED = ("commands", "logging", "lifecycle")


@dataclass
class Reload:
    """What one reload did."""

    config: AgentConfig | None = None
    applied: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def restart_needed(old: AgentConfig, new: AgentConfig) -> list[str]:
    """The changed keys a reload cannot apply (they keep their old value until a restart)."""
    changed: list[str] = []
    for name in AgentConfig.model_fields:
        if name in _RELOADED:
            continue
        before = getattr(old, name).model_dump(mode="json")
        after = getattr(new, name).model_dump(mode="json")
        if name == "device":
            before.pop("secret_file", None)
            after.pop("secret_file", None)
        if name == "messages":
            before = {"user_topics": before["user_topics"]}
            after = {"user_topics": after["user_topics"]}
        if name == "desired":
            if old.desired.enabled == new.desired.enabled:
                continue
            before, after = {"enabled": old.desired.enabled}, {"enabled": new.desired.enabled}
        changed.extend(f"{name}.{key}" for key in _diff(before, after))
    return changed


def _diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))


def reload_config(
    agent: Agent,
    old: AgentConfig,
    path: Path,
    *,
    read_secret: Callable[[Path], str],
) -> Reload:
    """Load ``path``, check it, and apply its safe parts to ``agent``; never raises."""
    try:
        new = load_config(path)
        problems = check_environment(new)
        if problems:
            raise ConfigError(problems)
        secret = None
        if new.device.secret_file is not None:
            secret = read_secret(new.device.secret_file)
            # A secret the profile cannot sign with is refused now, not at the next connect.
            agent.profile.connect_identity(secret, datetime.now(UTC))
    except AgentError as exc:
        return Reload(problems=[line.strip() for line in str(exc).splitlines() if line.strip()])
    result = Reload(config=new, restart_needed=restart_needed(old, new))
    if secret is not None:
        agent.set_secret(secret)
        result.applied.append("device.secret_file")
    for executor in _executors(agent):
        if isinstance(executor, CommandExecutor):
            executor.reconfigure(new.commands)
        elif isinstance(executor, MessageExecutor):
            executor.reconfigure(new.messages, new.commands)
        elif isinstance(executor, DesiredStateExecutor) and new.desired.enabled:
            executor.reconfigure(new.desired, new.commands)
    result.applied.extend(["commands", "messages", "desired", "logging", "lifecycle"])
    return result


def _executors(agent: Agent) -> list[object]:
    """Every executor object once, including those a gateway router or a wrapper holds."""
    seen: dict[int, object] = {}
    todo: list[object] = list(agent.executors.values())
    while todo:
        executor = todo.pop()
        if id(executor) in seen:
            continue
        seen[id(executor)] = executor
        for name in ("_inner", "inner"):
            inner = getattr(executor, name, None)
            if inner is not None:
                todo.append(inner)
    return list(seen.values())

"""Checks of a configuration against the machine it will run on, which the schema cannot make."""

from __future__ import annotations

from collections.abc import Iterator

from agent.config import AgentConfig, environment_problems, handler_problem
from agent.config.upgrades import ExecAdapter
from agent.core.errors import ConfigError, LocalProtocolError
from agent.profiles.tencent_iothub.ota import split_child
from agent.upgrade.verify import load_public_keys


def check_environment(config: AgentConfig) -> list[tuple[str, object, str]]:
    """Every problem the service would meet: files, handlers, installers, adapters, keys."""
    return [*environment_problems(config), *upgrade_problems(config)]


def upgrade_problems(config: AgentConfig) -> list[tuple[str, object, str]]:
    """Installer, helper and adapter programs must be allow-listed; keys must load."""
    problems: list[tuple[str, object, str]] = []
    for key, program in _programs(config):
        reason = handler_problem(program, config.commands.allowed_dirs)
        if reason:
            problems.append((key, program, reason))
    problems.extend(_tencent_children(config))
    try:
        load_public_keys(config.upgrades.public_keys)
    except ConfigError as exc:
        problems.extend(exc.problems)
    return problems


def _programs(config: AgentConfig) -> Iterator[tuple[str, str]]:
    upgrades = config.upgrades
    if upgrades.installer == "script" and upgrades.script is not None:
        yield "upgrades.script.argv", upgrades.script.argv[0]
        if upgrades.script.reboot is not None:
            yield "upgrades.script.reboot.argv", upgrades.script.reboot.argv[0]
    if upgrades.installer == "ab-slots" and upgrades.ab_slots is not None:
        for name in ("switch", "reboot", "health"):
            program = getattr(upgrades.ab_slots, name)
            if program is not None:
                yield f"upgrades.ab_slots.{name}.argv", program.argv[0]
    if config.gateway.enabled:
        for index, adapter in enumerate(config.gateway.adapters):
            if isinstance(adapter, ExecAdapter):
                yield f"gateway.adapters.{index}.argv", adapter.argv[0]


def _tencent_children(config: AgentConfig) -> Iterator[tuple[str, object, str]]:
    """Tencent children are named ``{product_id}/{device_name}`` (their topics need both)."""
    if config.device.profile != "tencent-iothub" or not config.gateway.enabled:
        return
    for index, child in enumerate(config.gateway.children):
        try:
            split_child(child.device_id)
        except LocalProtocolError:
            key = f"gateway.children.{index}.device_id"
            yield key, child.device_id, "must be {product_id}/{device_name} for Tencent IoT Hub"

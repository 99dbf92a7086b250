"""Checks of the upgrade and gateway configuration that the schema cannot make (files, programs)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from agent.errors import ConfigError, LocalProtocolError
from agent.settings_upgrades import AbSlotsInstaller, ExecAdapter, ScriptInstaller

if TYPE_CHECKING:
    from agent.config import AgentConfig


def upgrade_problems(config: AgentConfig) -> list[tuple[str, object, str]]:
    """Installer, helper and adapter programs must be allow-listed; keys must load."""
    from agent.config import handler_problem
    from agent.upgrade.verify import load_public_keys

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
    installer = config.upgrades.installer
    if isinstance(installer, ScriptInstaller):
        yield "upgrades.installer.argv", installer.argv[0]
        if installer.reboot is not None:
            yield "upgrades.installer.reboot.argv", installer.reboot.argv[0]
    if isinstance(installer, AbSlotsInstaller):
        for name in ("switch", "reboot", "health"):
            program = getattr(installer, name)
            if program is not None:
                yield f"upgrades.installer.{name}.argv", program.argv[0]
    if config.gateway.enabled:
        for type_name, adapter in config.gateway.adapters.items():
            if isinstance(adapter, ExecAdapter):
                yield f"gateway.adapters.{type_name}.argv", adapter.argv[0]


def _tencent_children(config: AgentConfig) -> Iterator[tuple[str, object, str]]:
    """Tencent children are named ``{product_id}/{device_name}`` (their topics need both)."""
    if config.device.profile != "tencent-iothub" or not config.gateway.enabled:
        return
    from agent.profiles.tencent_iothub.ota import split_child

    for index, child in enumerate(config.gateway.children):
        try:
            split_child(child.device_id)
        except LocalProtocolError:
            key = f"gateway.children.{index}.device_id"
            yield key, child.device_id, "must be {product_id}/{device_name} for Tencent IoT Hub"

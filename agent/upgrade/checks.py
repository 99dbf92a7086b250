"""Checks of the upgrade and gateway configuration that the schema cannot make (files, programs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.errors import ConfigError
from agent.settings_upgrades import AbSlotsInstaller, ExecAdapter, ScriptInstaller

if TYPE_CHECKING:
    from agent.config import AgentConfig


def upgrade_problems(config: AgentConfig) -> list[tuple[str, object, str]]:
    """Installer, helper and adapter programs must be allow-listed; keys must load."""
    from agent.config import handler_problem
    from agent.upgrade.verify import load_public_keys

    problems: list[tuple[str, object, str]] = []
    allowed = config.commands.allowed_dirs
    programs: list[tuple[str, str]] = []
    installer = config.upgrades.installer
    if isinstance(installer, ScriptInstaller):
        programs.append(("upgrades.installer.argv", installer.argv[0]))
        if installer.reboot is not None:
            programs.append(("upgrades.installer.reboot.argv", installer.reboot.argv[0]))
    if isinstance(installer, AbSlotsInstaller):
        for name in ("switch", "reboot", "health"):
            program = getattr(installer, name)
            if program is not None:
                programs.append((f"upgrades.installer.{name}.argv", program.argv[0]))
    if config.gateway.enabled:
        for type_name, adapter in config.gateway.adapters.items():
            if isinstance(adapter, ExecAdapter):
                programs.append((f"gateway.adapters.{type_name}.argv", adapter.argv[0]))
    for key, program in programs:
        reason = handler_problem(program, allowed)
        if reason:
            problems.append((key, program, reason))
    try:
        load_public_keys(config.upgrades.public_keys)
    except ConfigError as exc:
        problems.extend(exc.problems)
    return problems

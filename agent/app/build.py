"""The composition root: every concrete choice of an agent is made here and only here.

:func:`build_agent` turns a configuration into a running-ready :class:`~agent.app.agent.Agent`:
the profile for its platform, the MQTT transport, the executors for each subtask kind (commands,
messages, desired state, upgrades and, on a gateway, the children's routers). The daemon and the
fleet simulator both call it; the simulator wraps executors through ``wrap_executor`` and may
hand in its own transport.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import __version__
from agent.app.agent import Agent
from agent.config import (
    AgentConfig,
    HuaweiIotdaDevice,
    HuaweiOceanConnectDevice,
    TencentIothubDevice,
)
from agent.config.upgrades import ExecAdapter
from agent.executors.command import CommandExecutor
from agent.executors.desired import DesiredStateExecutor
from agent.executors.message import MessageExecutor
from agent.executors.unsupported import UnsupportedExecutor
from agent.gateway.adapters import ChildAdapter, ExecChildAdapter, SimulatedChildAdapter
from agent.gateway.presence import ChildPresence
from agent.gateway.registry import ChildRegistry
from agent.gateway.routing import ChildCommandRouter, ChildPropertiesExecutor
from agent.gateway.tasks import TaskGroups
from agent.journal.base import Journal
from agent.pipeline.executor import Executor
from agent.profiles.base import Profile
from agent.runtime.logging import get_logger
from agent.transport.base import Transport
from agent.transport.paho_bridge import MqttConnection
from agent.upgrade.download import Downloader
from agent.upgrade.executor import UpgradeExecutor
from agent.upgrade.hooks import ConnectHook
from agent.upgrade.installers.ab_slots import AbSlotsInstallerImpl
from agent.upgrade.installers.base import Installer
from agent.upgrade.installers.script import ScriptInstallerImpl
from agent.upgrade.installers.self_update import OwnPackagesOnly, SelfUpdater
from agent.upgrade.installers.simulated import SimulatedInstallerImpl
from agent.upgrade.packages import PackageCache
from agent.upgrade.verify import load_public_keys
from agent.upgrade.versions import VersionStore

ExecutorWrapper = Callable[[str, Executor], Executor]


def build_agent(
    config: AgentConfig,
    *,
    journal: Journal,
    secret: str,
    transport: Transport | None = None,
    connect_gate: asyncio.Semaphore | None = None,
    subscribe_gate: asyncio.Semaphore | None = None,
    wrap_executor: ExecutorWrapper | None = None,
    clock: Callable[[], float] = time.time,
    log: Any = None,
) -> Agent:
    """An agent for ``config``: its profile, transport and executors chosen from the settings.

    ``transport`` replaces the MQTT connection (an in-memory one in tests);
    ``wrap_executor(kind, executor)`` lets the caller wrap each executor (the simulator counts
    executions with it); ``connect_gate`` bounds how many agents connect at once, and
    ``subscribe_gate`` how many SUBSCRIBE exchanges are in flight across them.
    """
    profile = build_profile(config)
    log = log or get_logger(device_id=profile.device_id, profile=profile.name)
    if transport is None:
        transport = MqttConnection(
            config.mqtt, connect_gate=connect_gate, subscribe_gate=subscribe_gate, log=log
        )
    executors = build_executors(
        config, journal=journal, agent_id=profile.device_id, log=log, clock=clock
    )
    if wrap_executor is not None:
        # One executor may serve several kinds: wrap it once, so it stays one object.
        wrapped: dict[int, Executor] = {}
        executors = {
            kind: wrapped.setdefault(id(executor), wrap_executor(kind, executor))
            for kind, executor in executors.items()
        }
    return Agent(
        config,
        profile=profile,
        transport=transport,
        journal=journal,
        executors=executors,
        secret=secret,
        kind_limits=LONG_RUNNING_KINDS,
        clock=clock,
        log=log,
    )


def build_executors(
    config: AgentConfig,
    *,
    journal: Journal,
    agent_id: str,
    log: Any,
    clock: Callable[[], float] = time.time,
) -> dict[str, Executor]:
    """One executor per subtask kind the configuration enables."""
    command = CommandExecutor(config.commands)
    executors: dict[str, Executor] = {
        "command": command,
        "message": MessageExecutor(config.messages, config.commands),
        "unsupported": UnsupportedExecutor(),
    }
    if config.desired.enabled:
        desired = DesiredStateExecutor(config.desired, config.commands, journal, agent_id=agent_id)
        for kind in ("desired_state", "desired_refresh", "state_query"):
            executors[kind] = desired
    executors.update(
        upgrade_executors(
            config, journal=journal, agent_id=agent_id, command=command, log=log, clock=clock
        )
    )
    return executors


# -- profiles ------------------------------------------------------------------------------


# Each builder imports its own codecs: a daemon loads only the platform it speaks.


def _huawei_iotda(device: HuaweiIotdaDevice, config: AgentConfig) -> Profile:
    from agent.profiles.huawei_iotda.codec import HuaweiIotdaProfile

    return HuaweiIotdaProfile(
        device.device_id,
        sign_type=device.sign_type,
        user_topics=config.messages.user_topics,
        max_payload_bytes=config.limits.max_payload_bytes,
        desired_state=config.desired.enabled,
    )


def _tencent_iothub(device: TencentIothubDevice, config: AgentConfig) -> Profile:
    from agent.profiles.tencent_iothub.codec import TencentIothubProfile

    return TencentIothubProfile(
        device.product_id,
        device.device_name,
        auth_mode=device.auth,
        signature=device.signature,
        credential_ttl_s=device.credential_ttl_s,
        topics=device.topics,
        user_topics=config.messages.user_topics,
        status_key=device.shadow_status_key,
        desired_state=config.desired.enabled,
        max_payload_bytes=config.limits.max_payload_bytes,
        ota_updates=config.upgrades.enabled,
        gateway=config.gateway.enabled,
        children=[child.device_id for child in config.gateway.children],
    )


def _huawei_oceanconnect(device: HuaweiOceanConnectDevice, config: AgentConfig) -> Profile:
    from agent.profiles.huawei_oceanconnect.codec import OceanConnectProfile

    return OceanConnectProfile(
        device.device_id,
        sign_type=device.sign_type,
        user_topics=config.messages.user_topics,
        max_payload_bytes=config.limits.max_payload_bytes,
    )


_BUILDERS: dict[str, Callable[[Any, AgentConfig], Profile]] = {
    "huawei-iotda": _huawei_iotda,
    "tencent-iothub": _tencent_iothub,
    "huawei-oceanconnect": _huawei_oceanconnect,
}


def build_profile(config: AgentConfig) -> Profile:
    """The device-side profile named by ``config.device.profile``."""
    return _BUILDERS[config.device.profile](config.device, config)


# -- upgrades and gateways -----------------------------------------------------------------

# Subtask kinds that run for a long time get a pool of their own, so a gateway upgrading many
# children never keeps commands waiting; the executor bounds its own concurrency.
LONG_RUNNING_KINDS = {"upgrade": 4096}


def build_installer(config: AgentConfig, log: Any) -> Installer:
    """The configured installer."""
    upgrades = config.upgrades
    allowed = config.commands.allowed_dirs
    if upgrades.installer == "script" and upgrades.script is not None:
        return ScriptInstallerImpl(upgrades.script, allowed_dirs=allowed, log=log)
    if upgrades.installer == "ab-slots" and upgrades.ab_slots is not None:
        return AbSlotsInstallerImpl(
            upgrades.ab_slots,
            initial_version=upgrades.firmware_version,
            allowed_dirs=allowed,
            log=log,
        )
    if upgrades.installer is None and upgrades.self_update.enabled:
        return OwnPackagesOnly()
    # The configuration allows this only as a rehearsal (rehearsal_only) or with upgrades off,
    # where every offer is refused before an installer could be asked.
    return SimulatedInstallerImpl(upgrades.simulated)


# Platforms whose documentation defines progress reports during the download.
_DOWNLOAD_PROGRESS_PROFILES = frozenset({"tencent-iothub"})


def early_progress(config: AgentConfig) -> bool:
    """Whether progress is reported before the package is downloaded and verified."""
    configured = config.upgrades.report_download_progress
    if configured is not None:
        return configured
    return config.device.profile in _DOWNLOAD_PROGRESS_PROFILES


def build_adapters(config: AgentConfig, log: Any) -> dict[str, ChildAdapter]:
    """One adapter per configured child type."""
    adapters: dict[str, ChildAdapter] = {}
    for settings in config.gateway.adapters:
        if isinstance(settings, ExecAdapter):
            adapters[settings.type] = ExecChildAdapter(
                settings, allowed_dirs=config.commands.allowed_dirs, log=log
            )
        else:
            adapters[settings.type] = SimulatedChildAdapter(settings)
    return adapters


def upgrade_executors(
    config: AgentConfig,
    *,
    journal: Journal,
    agent_id: str,
    command: Executor,
    log: Any,
    clock: Any = time.time,
) -> dict[str, Executor]:
    """Executors for upgrades, version queries and (in gateway mode) children."""
    settings = config.upgrades
    state_dir = Path(settings.state_dir) / agent_id
    installer = build_installer(config, log)
    probe = installer.running_version if isinstance(installer, AbSlotsInstallerImpl) else None
    self_update: SelfUpdater | None = None
    if settings.self_update.enabled:
        # The software this device reports is then the agent itself, as it runs.
        self_update = SelfUpdater(settings.self_update, running_version=__version__, log=log)
    versions = VersionStore(
        journal,
        agent_id,
        firmware=settings.firmware_version,
        software=settings.software_version,
        firmware_probe=probe,
        software_probe=(lambda: __version__) if self_update is not None else None,
    )
    downloader = Downloader(settings, log=log)
    packages = PackageCache(state_dir / "packages", downloader, log=log)
    registry: ChildRegistry | None = None
    adapters: dict[str, ChildAdapter] = {}
    tasks: TaskGroups | None = None
    presence: ChildPresence | None = None

    async def running_version(device_id: str, target: str) -> str:
        # Bound late: the executor (built below) knows adapters, configuration and platform.
        return await upgrades.running_version(device_id, target)

    if config.gateway.enabled:
        registry = ChildRegistry(config.gateway, journal, agent_id)
        for child in config.gateway.children:
            versions.set_default(child.device_id, child.fw_version, child.sw_version)
        adapters = build_adapters(config, log)
        presence = ChildPresence(
            agent_id=agent_id,
            registry=registry,
            adapters=adapters,
            interval_s=config.gateway.presence_interval_s,
            manage=config.gateway.manage_children,
            log=log,
        )
        tasks = TaskGroups(
            journal,
            agent_id,
            registry,
            deadline_s=config.gateway.task_deadline_s,
            version_of=running_version,
            on_closed=lambda pid, key: packages.release(pid, key, keep_partial=False),
            log=log,
            clock=clock,
        )
        packages.hold_while(tasks.holds)
    upgrades = UpgradeExecutor(
        agent_id=agent_id,
        settings=settings,
        journal=journal,
        installer=installer,
        packages=packages,
        versions=versions,
        keys=load_public_keys(settings.public_keys),
        registry=registry,
        adapters=adapters,
        tasks=tasks,
        early_progress=early_progress(config),
        log=log,
        clock=clock,
        self_update=self_update,
    )
    hook = ConnectHook(
        upgrades=upgrades,
        registry=registry,
        tasks=tasks,
        presence=presence,
        packages=packages,
        versions=versions,
        report_children=config.gateway.report_child_versions,
        report_versions=settings.enabled,
        clock=clock,
        log=log,
    )
    executors: dict[str, Executor] = {
        "upgrade": upgrades,
        "invalid_upgrade": upgrades,
        "version_query": upgrades,
        "children_changed": hook,
        "child_properties_set": ChildPropertiesExecutor(registry=registry, adapters=adapters),
    }
    if registry is not None:
        executors["command"] = ChildCommandRouter(
            command, agent_id=agent_id, registry=registry, adapters=adapters
        )
    return executors

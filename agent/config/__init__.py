"""The agent's configuration: one TOML file, ``DEVICE_AGENT_*`` environment overrides, validated.

Every table rejects unknown keys so a typo fails at ``device-agent check-config`` time, not in the
field. Secrets are never written into the file: it names the files that hold them.
Environment overrides use ``__`` between levels: ``DEVICE_AGENT_MQTT__PORT=8883``.
"""

from agent.config.base import ENV_PREFIX, Section
from agent.config.handlers import (
    ApplierHandler,
    CommandRoute,
    CommandSettings,
    ExecHandler,
    Handler,
    ScriptHandler,
    SimulatedHandler,
)
from agent.config.identity import (
    DeviceIdentity,
    HuaweiIotdaDevice,
    HuaweiOceanConnectDevice,
    TencentIothubDevice,
)
from agent.config.loading import NON_CONFIG_ENV, AgentConfig, environment_problems, load_config
from agent.config.programs import handler_problem, interpreter_problem, script_problem
from agent.config.sections import (
    DesiredApplier,
    DesiredStateSettings,
    JournalSettings,
    LifecycleSettings,
    LimitSettings,
    LoggingSettings,
    MessageSettings,
    MetricsSettings,
    MqttSettings,
    TlsSettings,
)

__all__ = [
    "ENV_PREFIX",
    "NON_CONFIG_ENV",
    "AgentConfig",
    "ApplierHandler",
    "CommandRoute",
    "CommandSettings",
    "DesiredApplier",
    "DesiredStateSettings",
    "DeviceIdentity",
    "ExecHandler",
    "Handler",
    "HuaweiIotdaDevice",
    "HuaweiOceanConnectDevice",
    "JournalSettings",
    "LifecycleSettings",
    "LimitSettings",
    "LoggingSettings",
    "MessageSettings",
    "MetricsSettings",
    "MqttSettings",
    "ScriptHandler",
    "Section",
    "SimulatedHandler",
    "TencentIothubDevice",
    "TlsSettings",
    "environment_problems",
    "handler_problem",
    "interpreter_problem",
    "load_config",
    "script_problem",
]

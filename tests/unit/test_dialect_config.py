"""Profile selection and the new configuration: example files, validation, environment checks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agent import config as cfg
from agent.app.build import build_profile
from agent.app.checks import check_environment
from agent.config import AgentConfig, load_config
from agent.core.errors import ConfigError
from agent.profiles.huawei_iotda import HuaweiIotdaProfile
from agent.profiles.huawei_oceanconnect import OceanConnectProfile
from agent.profiles.tencent_iothub import TencentIothubProfile

CONFIG = Path(__file__).resolve().parents[2] / "config"
# The Huawei IoTDA example is the one the README installs.
EXAMPLE_FILES = {
    "huawei-iotda": CONFIG / "agent.example.toml",
    "tencent-iothub": CONFIG / "tencent-iothub.example.toml",
    "huawei-oceanconnect": CONFIG / "huawei-oceanconnect.example.toml",
}
EXAMPLES: dict[str, tuple[type[BaseModel], type]] = {
    "huawei-iotda": (cfg.HuaweiIotdaDevice, HuaweiIotdaProfile),
    "tencent-iothub": (cfg.TencentIothubDevice, TencentIothubProfile),
    "huawei-oceanconnect": (cfg.HuaweiOceanConnectDevice, OceanConnectProfile),
}
_COMMON: list[type[BaseModel]] = [
    cfg.MqttSettings,
    cfg.TlsSettings,
    cfg.JournalSettings,
    cfg.LimitSettings,
    cfg.CommandSettings,
    cfg.CommandRoute,
    cfg.ExecHandler,
    cfg.ScriptHandler,
    cfg.SimulatedHandler,
    cfg.MessageSettings,
    cfg.LoggingSettings,
    cfg.LifecycleSettings,
]


def _fields(models: list[type[BaseModel]]) -> set[str]:
    return {name for model in models for name in model.model_fields}


@pytest.mark.parametrize("profile", sorted(EXAMPLES))
def test_each_profile_has_an_example_that_validates(profile: str) -> None:
    """Each profile's example file loads and selects its profile's codec."""
    config = load_config(EXAMPLE_FILES[profile])

    identity, codec = EXAMPLES[profile]
    assert isinstance(config.device, identity)
    assert isinstance(build_profile(config), codec)


@pytest.mark.parametrize("profile", sorted(EXAMPLES))
def test_every_field_is_documented_in_the_profiles_example(profile: str) -> None:
    """Every configuration key that applies to the profile appears in its example file."""
    text = EXAMPLE_FILES[profile].read_text()
    models: list[type[BaseModel]] = [*_COMMON, EXAMPLES[profile][0]]
    if profile != "huawei-oceanconnect":
        models += [cfg.DesiredStateSettings, cfg.DesiredApplier]
    sections = set(AgentConfig.model_fields) - (
        {"desired"} if profile == "huawei-oceanconnect" else set()
    )

    missing = sorted(
        name
        for name in _fields(models)
        # A key (``name =``, also commented out or inline) or a table (``[a.name]``).
        if not re.search(rf"(^|[\s{{,#]){name}\s*=|\.{name}\]", text, re.MULTILINE)
    )
    tables = set(re.findall(r"^\[+([a-z_]+)", text, re.MULTILINE))

    assert missing == []
    assert sections <= tables


def _base(tmp_path: Path, device: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"device": device, "mqtt": {"host": "127.0.0.1", **sections.pop("mqtt", {})}, **sections}


def _tencent(**fields: Any) -> dict[str, Any]:
    return {
        "profile": "tencent-iothub",
        "product_id": "ABCDE12345",
        "device_name": "dev-1",
        "secret_file": "/s",
        **fields,
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_tencent(auth="certificate"), "needs mqtt.tls.enabled with cert_file"),
        ({**_tencent(), "secret_file": None}, "needs secret_file"),
        (_tencent(topics=["control/+"]), "topic suffix"),
        (_tencent(topics=["#"]), "topic suffix"),
        (_tencent(topics=["data", "data"]), "unique"),
        (_tencent(product_id="ABC/DE"), "product_id"),
        (_tencent(device_name="dev 1"), "device_name"),
        (_tencent(signature="md5"), "signature"),
    ],
)
def test_bad_tencent_identities_are_refused_naming_the_problem(
    tmp_path: Path, data: dict[str, Any], message: str
) -> None:
    """Certificate mode needs TLS with a certificate; key mode needs a secret; names are checked."""
    with pytest.raises(ValueError, match=message):
        AgentConfig(**_base(tmp_path, data))


def test_tencent_keepalive_is_held_to_the_platforms_limit(tmp_path: Path) -> None:
    """IoT Hub accepts a keepalive of at most 900 s; more is refused at load time."""
    with pytest.raises(ValueError, match="at most 900"):
        AgentConfig(**_base(tmp_path, _tencent(), mqtt={"keepalive_s": 901}))


def test_tencent_certificate_mode_with_mutual_tls_needs_no_secret(tmp_path: Path) -> None:
    """Certificate devices name no secret file; the device id is product/device."""
    tls = {"enabled": True, "cert_file": "/c.pem", "key_file": "/c.key"}
    config = AgentConfig(
        **_base(tmp_path, {**_tencent(auth="certificate"), "secret_file": None}, mqtt={"tls": tls})
    )

    assert config.device.device_id == "ABCDE12345/dev-1"
    assert config.device.secret_file is None


def test_oceanconnect_refuses_desired_state(tmp_path: Path) -> None:
    """OceanConnect has no desired state: configuring appliers for it is an error."""
    device = {"profile": "huawei-oceanconnect", "device_id": "d1", "secret_file": "/s"}

    with pytest.raises(ValueError, match="no desired state"):
        AgentConfig(**_base(tmp_path, device, desired={"state_file": "/tmp/state.json"}))


@pytest.mark.parametrize(
    ("desired", "message"),
    [
        (
            {"appliers": [{"section": "A", "handler": {"argv": ["/x"]}}] * 2},
            "more than one applier",
        ),
        ({"state_file_sections": ["A"]}, "needs state_file"),
        (
            {
                "state_file": "/s.json",
                "state_file_sections": ["A"],
                "appliers": [{"section": "A", "handler": {"argv": ["/x"]}}],
            },
            "also in state_file_sections",
        ),
        ({"appliers": [{"section": "", "handler": {"argv": ["/x"]}}]}, "section name"),
        (
            {
                "appliers": [
                    {"section": "A", "handler": {"kind": "script", "task_type": 35, "script": "/s"}}
                ]
            },
            "script",
        ),
        ({"max_depth": 0}, "max_depth"),
    ],
)
def test_bad_desired_sections_are_refused(
    tmp_path: Path, desired: dict[str, Any], message: str
) -> None:
    """One applier per section, state-file sections need the file, names are checked."""
    device = {"profile": "huawei-iotda", "device_id": "d1", "secret_file": "/s"}

    with pytest.raises(ValueError, match=message):
        AgentConfig(**_base(tmp_path, device, desired=desired))


def test_script_handlers_are_checked_against_the_allow_list(tmp_path: Path) -> None:
    """A script outside allowed_dirs and a missing interpreter are both named with their keys."""
    secret = tmp_path / "secret"
    secret.write_text("s")
    (tmp_path / "handlers").mkdir()
    outside = tmp_path / "task.sh"
    outside.write_text("true\n")
    routes = [
        {
            "command_name": "A",
            "handler": {"kind": "script", "task_type": 35, "script": str(outside)},
        },
        {
            "command_name": "B",
            "handler": {
                "kind": "script",
                "task_type": 30,
                "script": str(outside),
                "interpreter": "/nonexistent/python3",
            },
        },
    ]
    device = {"profile": "huawei-iotda", "device_id": "d1", "secret_file": str(secret)}
    config = AgentConfig(
        **_base(
            tmp_path,
            device,
            commands={"allowed_dirs": [str(tmp_path / "handlers")], "routes": routes},
        )
    )

    problems = {key: reason for key, _, reason in check_environment(config)}

    assert "not inside an allowed directory" in problems["commands.routes.0.handler.script"]
    assert problems["commands.routes.1.handler.interpreter"] == "does not exist"
    assert "commands.routes.0.handler.interpreter" not in problems  # /bin/sh exists


def test_unknown_profile_is_refused_naming_the_key(tmp_path: Path) -> None:
    """A profile the agent does not speak fails loading with a clear message."""
    path = tmp_path / "agent.toml"
    path.write_text('[device]\nprofile = "aws-iot"\ndevice_id = "d"\n[mqtt]\nhost = "h"\n')

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert "device" in str(caught.value)
    assert tomllib.loads(path.read_text())["device"]["profile"] == "aws-iot"

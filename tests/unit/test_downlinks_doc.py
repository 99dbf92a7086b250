"""docs/downlinks.md: every example decodes to its documented kind, and nothing is left out.

The catalogue cannot go stale: each profile's subscriptions (from the profile itself) and the
event and message types its decoders act on (the tables the decoders use) must each have an
example, and each example must be accepted by that profile's decoder as the kind it names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.core.topics import matches
from agent.profiles.huawei_iotda import HuaweiIotdaProfile
from agent.profiles.huawei_iotda.events import HANDLED_EVENTS
from agent.profiles.huawei_oceanconnect import OceanConnectProfile
from agent.profiles.tencent_iothub.codec import SHADOW_TYPES, TencentIothubProfile
from agent.profiles.tencent_iothub.ota import GATEWAY_TYPES, OTA_TYPES

DOC = Path(__file__).resolve().parents[2] / "docs" / "downlinks.md"
_BLOCK = re.compile(r"^```json downlink (?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.M | re.S)


@dataclass(frozen=True)
class Example:
    """One documented downlink."""

    profile: str
    topic: str
    kind: str
    payload: bytes
    line: int


def examples() -> list[Example]:
    """The examples of the document, in order."""
    text = DOC.read_text()
    found = []
    for block in _BLOCK.finditer(text):
        info = dict(part.split("=", 1) for part in block["info"].split())
        line = text.count("\n", 0, block.start()) + 1
        found.append(
            Example(info["profile"], info["topic"], info["kind"], block["body"].encode(), line)
        )
    return found


# The identities the document's examples use.
PROFILES: dict[str, Callable[[], Any]] = {
    "huawei-iotda": lambda: HuaweiIotdaProfile(
        "dev-1", user_topics=["$oc/devices/{device_id}/user/messageDown"], desired_state=True
    ),
    "tencent-iothub": lambda: TencentIothubProfile(
        "ABCDEF1234",
        "door-1",
        user_topics=["$broadcast/rxd/{product_id}/{device_name}"],
        desired_state=True,
        ota_updates=True,
        gateway=True,
        children=["CHILDPID01/lamp-1"],
    ),
    "huawei-oceanconnect": lambda: OceanConnectProfile(
        "dev-1", user_topics=["/huawei/v1/devices/{device_id}/user/down"]
    ),
}


def _method(example: Example) -> str | None:
    """The event or message type an example carries on a topic that carries several."""
    body = json.loads(example.payload)
    if example.profile == "huawei-iotda" and example.topic.endswith("/sys/events/down"):
        (service,) = body["services"]
        return f"{service['service_id']}/{service['event_type']}"
    if example.profile == "tencent-iothub" and example.topic.startswith(
        ("$shadow/", "$ota/", "$gateway/")
    ):
        return f"{example.topic.split('/')[0]}/{body['type']}"
    return None


# Every type the decoders act on, named as _method names them.
HANDLED: dict[str, set[str]] = {
    "huawei-iotda": {f"{svc}/{kind}" for svc, kinds in HANDLED_EVENTS.items() for kind in kinds},
    "tencent-iothub": {f"$shadow/{kind}" for kind in SHADOW_TYPES}
    | {f"$ota/{kind}" for kind in OTA_TYPES}
    | {f"$gateway/{kind}" for kind in GATEWAY_TYPES},
    "huawei-oceanconnect": set(),
}


@pytest.mark.parametrize("example", examples(), ids=lambda e: f"{e.profile}:{e.line}")
def test_each_documented_example_decodes_to_its_documented_kind(example: Example) -> None:
    """The profile accepts the example as the kind the document names."""
    profile = PROFILES[example.profile]()
    subscribed = [s.topic_filter for s in profile.subscriptions()]
    assert any(matches(f, example.topic) for f in subscribed), (
        f"line {example.line}: {example.topic} is not subscribed: {subscribed}"
    )
    decoded = profile.decode(example.topic, example.payload)
    assert decoded.kind == example.kind, f"line {example.line}: {decoded!r}"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_subscription_and_every_handled_type_has_an_example(profile: str) -> None:
    """A topic or type added to a profile without an example here fails this test."""
    documented = [e for e in examples() if e.profile == profile]
    filters = [s.topic_filter for s in PROFILES[profile]().subscriptions()]
    missing = [f for f in filters if not any(matches(f, e.topic) for e in documented)]
    assert not missing, f"{profile}: no example for {missing}"
    methods = {_method(e) for e in documented} - {None}
    assert HANDLED[profile] <= methods, f"{profile}: no example for {HANDLED[profile] - methods}"
    assert methods <= HANDLED[profile], f"{profile}: examples of unhandled types {methods}"


def test_the_document_is_linked_from_the_platforms_page() -> None:
    """Readers find it where the platforms are described."""
    assert "(downlinks.md)" in (DOC.parent / "platforms.md").read_text()
    assert len(examples()) >= len(PROFILES)

"""MQTT topic filter matching and validity, as brokers apply them."""

from __future__ import annotations

import pytest

from agent.core.topics import is_filter_valid, matches


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b/c", "a/b/c", True),
        ("a/b/c", "a/b", False),
        ("a/b", "a/b/c", False),
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a//c", True),
        ("a/+", "a/b/c", False),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("sport/#", "sport", True),
        ("sport/#", "sport/tennis/player1", True),
        ("sport/tennis/#", "sport/tennis", True),
        ("#", "anything/at/all", True),
        ("a/b/c", "A/b/c", False),
        # $-topics (MQTT 3.1.1, 4.7.2): a leading wildcard does not match them.
        ("#", "$SYS/broker/uptime", False),
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("$SYS/#", "$SYS/broker/uptime", True),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
        ("$oc/devices/+/sys/commands/+", "$oc/devices/d1/sys/commands/request_id=1", True),
        ("$oc/devices/d1/sys/commands/+", "$oc/devices/d1/sys/commands/response/x", False),
        ("+/devices/d1/sys/messages/down", "$oc/devices/d1/sys/messages/down", False),
    ],
)
def test_matches_follows_the_mqtt_rules(topic_filter: str, topic: str, expected: bool) -> None:
    """+ matches one level, # the rest (and the parent), $-topics need a literal first level."""
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize(
    ("topic_filter", "valid"),
    [
        ("a/b", True),
        ("+", True),
        ("#", True),
        ("a/+/#", True),
        ("$oc/devices/x/user/#", True),
        ("", False),
        ("a/#/b", False),
        ("a#", False),
        ("a/b+", False),
        ("a/\x00", False),
        ("a" * 65536, False),
    ],
)
def test_filter_validity(topic_filter: str, valid: bool) -> None:
    """Wildcards only as whole levels, # only last; no NUL; at most 65535 bytes."""
    assert is_filter_valid(topic_filter) is valid

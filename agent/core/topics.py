"""MQTT topic filter matching (``+`` one level, ``#`` the rest), as brokers do it."""

from __future__ import annotations


def matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter``.

    Topics starting with ``$`` are not matched by a filter starting with a wildcard
    (MQTT 3.1.1, 4.7.2).
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    want = topic_filter.split("/")
    have = topic.split("/")
    for index, level in enumerate(want):
        if level == "#":
            return True
        if index >= len(have):
            return False
        if level not in ("+", have[index]):
            return False
    return len(want) == len(have)


def is_filter_valid(topic_filter: str) -> bool:
    """Whether ``topic_filter`` is a syntactically valid subscription filter."""
    if not topic_filter or "\x00" in topic_filter or len(topic_filter.encode()) > 65535:
        return False
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True

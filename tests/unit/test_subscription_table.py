"""The embedded broker's subscription index finds exactly the filters that match a topic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.core.topics import matches
from agent.sim.embedded_broker import SubscriptionTable

FILTERS = [
    "$oc/devices/dev-1/sys/commands/+",
    "$oc/devices/dev-1/sys/messages/down",
    "$oc/devices/dev-2/sys/commands/+",
    "$oc/devices/+/sys/events/up",
    "$shadow/operation/result/P1/door-1",
    "P1/door-1/control",
    "a/b/c/d/e/+",
    "a/+/c",
    "#",
    "+/b/#",
    "a/b/#",
]
TOPICS = [
    "$oc/devices/dev-1/sys/commands/request_id=1",
    "$oc/devices/dev-2/sys/commands/request_id=1",
    "$oc/devices/dev-3/sys/events/up",
    "$oc/devices/dev-1/sys/messages/down",
    "$shadow/operation/result/P1/door-1",
    "P1/door-1/control",
    "a/b/c/d/e/f",
    "a/x/c",
    "a/b",
    "x/b/y/z",
]


def _table(filters: list[str]) -> SubscriptionTable:
    table = SubscriptionTable()
    for topic_filter in filters:
        table[topic_filter] = []
    return table


def test_candidates_include_every_matching_filter() -> None:
    """Every filter that matches a topic is among its candidates."""
    table = _table(FILTERS)

    for topic in TOPICS:
        wanted = {f for f in FILTERS if matches(f, topic)}
        assert wanted <= set(table.candidates(topic)), topic


def test_candidates_leave_out_other_devices_filters() -> None:
    """A device's topic is not tested against every other device's filters."""
    table = _table([f"$oc/devices/dev-{i}/sys/commands/+" for i in range(1000)])

    assert table.candidates("$oc/devices/dev-7/sys/commands/request_id=1") == [
        "$oc/devices/dev-7/sys/commands/+"
    ]


def test_index_follows_additions_and_removals() -> None:
    """Filters added or removed after a lookup are seen by the next lookup."""
    table = _table(["a/+"])
    assert table.candidates("a/b") == ["a/+"]

    table["a/b"] = []
    del table["a/+"]
    assert table.candidates("a/b") == ["a/b"]
    table.clear()
    assert table.candidates("a/b") == []


LEVEL = st.sampled_from(["a", "b", "$oc", "dev-1", "x"])


@given(
    filters=st.lists(
        st.lists(st.one_of(LEVEL, st.just("+")), min_size=1, max_size=6).map("/".join)
        | st.lists(LEVEL, min_size=0, max_size=5).map(lambda ls: "/".join([*ls, "#"])),
        max_size=20,
    ),
    topic=st.lists(LEVEL, min_size=1, max_size=7).map("/".join),
)
def test_candidates_never_miss_a_match(filters: list[str], topic: str) -> None:
    """For arbitrary filters and topics, no matching filter is missing from the candidates."""
    table = _table(filters)

    assert {f for f in filters if matches(f, topic)} <= set(table.candidates(topic))

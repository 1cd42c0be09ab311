"""protocol.topics: builders, filters and parsing of machine topics."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    ProtocolError,
    TopicAddress,
    TopicKind,
    ack_topic,
    auth_request_topic,
    auth_response_topic,
    check_segment,
    command_topic,
    config_topic,
    events_topic,
    parse_topic,
    shared_filter,
    status_topic,
    subscription_filter,
)
from tests.protocol.strategies import slugs

BUILDERS = {
    TopicKind.STATUS: status_topic,
    TopicKind.EVENTS: events_topic,
    TopicKind.ACK: ack_topic,
    TopicKind.CONFIG: config_topic,
    TopicKind.AUTH_REQUEST: auth_request_topic,
    TopicKind.AUTH_RESPONSE: auth_response_topic,
    TopicKind.COMMAND: command_topic,
}


def test_builders_cover_every_topic_kind() -> None:
    assert set(BUILDERS) == set(TopicKind)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (TopicKind.STATUS, "fablab/v1/lab/laser-1/status"),
        (TopicKind.EVENTS, "fablab/v1/lab/laser-1/events"),
        (TopicKind.ACK, "fablab/v1/lab/laser-1/ack"),
        (TopicKind.CONFIG, "fablab/v1/lab/laser-1/config"),
        (TopicKind.AUTH_REQUEST, "fablab/v1/lab/laser-1/auth/request"),
        (TopicKind.AUTH_RESPONSE, "fablab/v1/lab/laser-1/auth/response"),
        (TopicKind.COMMAND, "fablab/v1/lab/laser-1/command"),
    ],
)
def test_topic_builder_spells_the_documented_name(kind: TopicKind, expected: str) -> None:
    assert BUILDERS[kind]("lab", "laser-1") == expected


@given(site=slugs, machine=slugs, kind=st.sampled_from(list(TopicKind)))
def test_parse_topic_round_trips_every_builder(site: str, machine: str, kind: TopicKind) -> None:
    assert parse_topic(BUILDERS[kind](site, machine)) == TopicAddress(site, machine, kind)


@pytest.mark.parametrize(
    "bad",
    ["", "Laser", "laser 1", "laser/1", "+", "#", "-laser", "_x", "é", "a" * 64, "lab\n", "x\x00"],
)
def test_topic_builders_reject_bad_slugs(bad: str) -> None:
    with pytest.raises(ProtocolError) as err:
        events_topic(bad, "laser-1")
    assert err.value.field == "site"
    with pytest.raises(ProtocolError) as err:
        events_topic("lab", bad)
    assert err.value.field == "machine"


def test_check_segment_accepts_the_longest_slug() -> None:
    assert check_segment("a" * 63, "site") == "a" * 63


def test_check_segment_rejects_non_strings() -> None:
    with pytest.raises(ProtocolError):
        check_segment(42, "site")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("topic", "field"),
    [
        ("other/v1/lab/m1/events", "topic"),
        ("fablab/v2/lab/m1/events", "topic"),
        ("fablab/v1/lab/m1", "topic"),
        ("fablab/v1/Lab/m1/events", "topic.site"),
        ("fablab/v1/lab/+/events", "topic.machine"),
        ("fablab/v1/lab/m1/bogus", "topic.kind"),
        ("fablab/v1/lab/m1/events/extra", "topic.kind"),
        ("fablab/v1/lab/m1/auth/other", "topic.kind"),
        ("fablab/v1/lab\n/m1/events", "topic.site"),
    ],
)
def test_parse_topic_rejects_non_machine_topics(topic: str, field: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_topic(topic)
    assert err.value.field == field


def test_subscription_filter_matches_every_machine_of_a_site() -> None:
    assert subscription_filter(TopicKind.EVENTS) == "fablab/v1/+/+/events"
    assert subscription_filter(TopicKind.STATUS, "lab") == "fablab/v1/lab/+/status"
    assert subscription_filter(TopicKind.AUTH_REQUEST, "lab") == "fablab/v1/lab/+/auth/request"


def test_subscription_filter_rejects_a_bad_site() -> None:
    with pytest.raises(ProtocolError):
        subscription_filter(TopicKind.EVENTS, "Lab")


def test_shared_filter_prefixes_the_group() -> None:
    events = subscription_filter(TopicKind.EVENTS)
    assert shared_filter("ingest", events) == "$share/ingest/fablab/v1/+/+/events"
    with pytest.raises(ProtocolError):
        shared_filter("in/gest", events)

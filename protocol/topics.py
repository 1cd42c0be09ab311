"""MQTT topic names: the only place in the code base that spells them.

Shape: ``fablab/v1/{site}/{machine}/{kind}``, MQTT 3.1.1 wildcards only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import ProtocolError

ROOT = "fablab/v1"
_SEGMENT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class TopicKind(StrEnum):
    """The last part(s) of a machine's topic."""

    STATUS = "status"
    EVENTS = "events"
    ACK = "ack"
    CONFIG = "config"
    AUTH_REQUEST = "auth/request"
    AUTH_RESPONSE = "auth/response"
    COMMAND = "command"


@dataclass(frozen=True)
class TopicAddress:
    """A parsed machine topic."""

    site: str
    machine: str
    kind: TopicKind


def check_segment(value: str, field: str) -> str:
    """Validate a site or machine slug (lowercase letters, digits, '-' and '_')."""
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise ProtocolError(field, "must be a slug: lowercase letters, digits, '-' or '_'")
    return value


def machine_topic(site: str, machine: str, kind: TopicKind) -> str:
    """The topic of one kind for one machine."""
    check_segment(site, "site")
    check_segment(machine, "machine")
    return f"{ROOT}/{site}/{machine}/{kind.value}"


def status_topic(site: str, machine: str) -> str:
    return machine_topic(site, machine, TopicKind.STATUS)


def events_topic(site: str, machine: str) -> str:
    return machine_topic(site, machine, TopicKind.EVENTS)


def ack_topic(site: str, machine: str) -> str:
    return machine_topic(site, machine, TopicKind.ACK)


def config_topic(site: str, machine: str) -> str:
    return machine_topic(site, machine, TopicKind.CONFIG)


def auth_request_topic(site: str, machine: str) -> str:
    return machine_topic(site, machine, TopicKind.AUTH_REQUEST)


def auth_response_topic(site: str, machine: str) -> str:
    return machine_topic(site, machine, TopicKind.AUTH_RESPONSE)


def command_topic(site: str, machine: str) -> str:
    return machine_topic(site, machine, TopicKind.COMMAND)


def subscription_filter(kind: TopicKind, site: str = "+") -> str:
    """Filter matching one kind of topic for every machine of a site ('+' = all sites)."""
    if site != "+":
        check_segment(site, "site")
    return f"{ROOT}/{site}/+/{kind.value}"


def shared_filter(group: str, topic_filter: str) -> str:
    """A shared subscription (``$share/group/filter``) to spread ingest over processes."""
    check_segment(group, "group")
    return f"$share/{group}/{topic_filter}"


def parse_topic(topic: str) -> TopicAddress:
    """Split a machine topic into site, machine and kind; ProtocolError if it is not one."""
    prefix = ROOT + "/"
    if not topic.startswith(prefix):
        raise ProtocolError("topic", f"not under {ROOT}: {topic!r}")
    parts = topic[len(prefix):].split("/", 2)
    if len(parts) != 3:
        raise ProtocolError("topic", f"expected site/machine/kind: {topic!r}")
    site, machine, kind = parts
    check_segment(site, "topic.site")
    check_segment(machine, "topic.machine")
    try:
        return TopicAddress(site, machine, TopicKind(kind))
    except ValueError:
        raise ProtocolError("topic.kind", f"unknown topic kind {kind!r}") from None

"""docs/protocol.md: every example payload decodes with protocol/, every kind is shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol import (
    Ack,
    AuthRequest,
    ControllerStatus,
    Event,
    EventKind,
    TopicKind,
    verify_auth_response,
    verify_command,
    verify_config,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
EXAMPLE_KEY = b"example-key-of-ctl-laser-1"  # named in the doc
_BLOCK = re.compile(r"<!-- example: (\w+) -->\n```json\n(.*?)\n```", re.DOTALL)


def _examples() -> list[tuple[str, str]]:
    return _BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_protocol_doc_has_examples_of_every_payload() -> None:
    kinds = [kind for kind, _ in _examples()]
    assert {
        "event", "ack", "status", "config", "command", "auth_request", "auth_response"
    } <= set(kinds)


@pytest.mark.parametrize(("kind", "payload"), _examples())
def test_protocol_doc_example_decodes(kind: str, payload: str) -> None:
    if kind == "event":
        Event.decode(payload)
    elif kind == "ack":
        Ack.decode(payload)
    elif kind == "status":
        ControllerStatus.decode(payload)
    elif kind == "config":
        verify_config(payload, EXAMPLE_KEY)
    elif kind == "command":
        verify_command(payload, EXAMPLE_KEY, now=1767261700)
    elif kind == "auth_request":
        AuthRequest.decode(payload)
    elif kind == "auth_response":
        verify_auth_response(payload, EXAMPLE_KEY)
    else:
        pytest.fail(f"unknown example kind {kind!r}")


def test_protocol_doc_shows_every_event_kind() -> None:
    shown = {Event.decode(p).kind for k, p in _examples() if k == "event"}
    assert shown == set(EventKind)


def test_protocol_doc_lists_every_topic_kind() -> None:
    text = DOC.read_text(encoding="utf-8")
    for kind in TopicKind:
        assert f"`fablab/v1/lab/laser-1/{kind.value}`" in text

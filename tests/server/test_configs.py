"""Signed configs are republished after every change to trainings or badges."""

from __future__ import annotations

from protocol import Level, PermissionSnapshot, badge_digest, config_topic, verify_config
from server.bootstrap import ServerRuntime
from server.service_layer import commands as cmds
from server.service_layer.commands import OutgoingMessage
from tests.server.conftest import KEY_HEX, SITE

KEY = bytes.fromhex(KEY_HEX)


def _last_snapshot(sent: list[OutgoingMessage]) -> PermissionSnapshot:
    configs = [m for m in sent if m.topic == config_topic(SITE, "laser")]
    assert configs, "no config was published"
    assert configs[-1].retain
    return verify_config(configs[-1].payload, KEY)


def test_publish_configs_grant_adds_badge_to_snapshot(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.GrantTraining("nora", "laser", Level.SUPERVISED))
    entry = _last_snapshot(sent).lookup(badge_digest(KEY, "04FFEE01"))
    assert entry is not None and entry.level is Level.SUPERVISED


def test_publish_configs_revoke_removes_badge_with_newer_version(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.PublishConfigs())
    before = _last_snapshot(sent)
    lab.bus.handle(cmds.RevokeTraining("ada", "laser"))
    after = _last_snapshot(sent)
    assert before.lookup(badge_digest(KEY, "04A1B2C3")) is not None
    assert after.lookup(badge_digest(KEY, "04A1B2C3")) is None
    assert after.version > before.version


def test_publish_configs_new_badge_of_trained_member_is_published(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.RegisterBadge("ada", "04A1B2C4"))
    assert _last_snapshot(sent).lookup(badge_digest(KEY, "04A1B2C4")) is not None


def test_publish_configs_republish_without_change_keeps_version(
    lab: ServerRuntime, sent: list[OutgoingMessage]
) -> None:
    lab.bus.handle(cmds.PublishConfigs())
    first = _last_snapshot(sent)
    lab.bus.handle(cmds.PublishConfigs())
    assert _last_snapshot(sent).version == first.version

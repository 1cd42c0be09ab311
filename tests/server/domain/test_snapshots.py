"""Building the versioned permission snapshot of a machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from protocol import Level, MachineSettings, badge_digest, encode_config, verify_config
from server.domain.snapshots import BadgeGrant, PublishedVersion, build_snapshot

KEY = bytes(range(32))
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
ADA = BadgeGrant("04A1B2C3", "ada", Level.AUTONOMOUS, None)


def _build(grants: list[BadgeGrant], previous: PublishedVersion, now: datetime = NOW):  # type: ignore[no-untyped-def]
    return build_snapshot(
        site="lab",
        machine_id="laser",
        controller_id="laser",
        key=KEY,
        settings=MachineSettings(name="Laser"),
        grants=grants,
        previous=previous,
        now=now,
    )


def test_build_snapshot_lists_badges_by_keyed_digest() -> None:
    snapshot, _ = _build([ADA], PublishedVersion(0, 0, None))
    entry = snapshot.lookup(badge_digest(KEY, "04:a1:b2:c3"))
    assert entry is not None and entry.member_id == "ada"
    assert "04A1B2C3" not in encode_config(snapshot, KEY).decode()


def test_build_snapshot_unchanged_content_keeps_version() -> None:
    first, digest = _build([ADA], PublishedVersion(0, 0, None))
    again, _ = _build(
        [ADA], PublishedVersion(first.version, first.issued_at, digest), NOW + timedelta(hours=1)
    )
    assert again == first


def test_build_snapshot_change_gets_newer_version_than_previous() -> None:
    first, digest = _build([ADA], PublishedVersion(0, 0, None))
    later, _ = _build([], PublishedVersion(first.version, first.issued_at, digest))
    assert later.version > first.version
    verify_config(encode_config(later, KEY), KEY, held_version=first.version)


def test_build_snapshot_version_increases_even_after_clock_goes_back() -> None:
    first, digest = _build([ADA], PublishedVersion(0, 0, None))
    later, _ = _build(
        [], PublishedVersion(first.version, first.issued_at, digest), NOW - timedelta(days=1)
    )
    assert later.version == first.version + 1


def test_build_snapshot_carries_training_expiry_as_epoch_seconds() -> None:
    expiry = NOW + timedelta(days=30)
    snapshot, _ = _build(
        [BadgeGrant("04A1B2C3", "ada", Level.SUPERVISED, expiry)], PublishedVersion(0, 0, None)
    )
    assert snapshot.permissions[0].expires_at == int(expiry.timestamp())


def test_build_snapshot_unchanged_content_past_reissue_age_gets_new_version() -> None:
    first, digest = _build([ADA], PublishedVersion(0, 0, None))
    later = NOW + timedelta(hours=1)
    again, _ = build_snapshot(
        site="lab",
        machine_id="laser",
        controller_id="laser",
        key=KEY,
        settings=MachineSettings(name="Laser"),
        grants=[ADA],
        previous=PublishedVersion(first.version, first.issued_at, digest),
        now=later,
        reissue_older_than_s=3600,
    )
    assert again.version > first.version
    assert again.issued_at == int(later.timestamp())
    assert again.permissions == first.permissions

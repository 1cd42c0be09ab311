"""The on-disk snapshot: atomic save, and nothing unverified is ever loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pi_helpers import CONTROLLER_ID, KEY, MACHINE, SITE, make_snapshot, signed_config

from firmware_pi.snapshot_store import SnapshotStore, SnapshotVerifier
from protocol import ProtocolError, SignatureError, StaleSnapshotError

VERIFIER = SnapshotVerifier(key=KEY, site=SITE, machine=MACHINE, controller_id=CONTROLLER_ID)


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "snapshot.json", VERIFIER)


def test_snapshot_store_reloads_saved_snapshot(store: SnapshotStore) -> None:
    store.save(signed_config(make_snapshot(version=7)))

    loaded = SnapshotStore(store.path, VERIFIER).load()

    assert loaded == make_snapshot(version=7)


def test_snapshot_store_starts_empty_without_file(store: SnapshotStore) -> None:
    assert store.load() is None


def test_snapshot_store_rejects_forged_file(store: SnapshotStore) -> None:
    forged = json.loads(signed_config())
    forged["snapshot"]["permissions"][0]["member_id"] = "m-mallory"
    store.path.write_text(json.dumps(forged))

    assert store.load() is None


def test_snapshot_store_rejects_file_signed_with_another_key(store: SnapshotStore) -> None:
    store.path.write_bytes(signed_config(key=b"x" * 32))

    assert store.load() is None


def test_snapshot_store_rejects_corrupted_file(store: SnapshotStore) -> None:
    store.path.write_bytes(signed_config()[:-10])

    assert store.load() is None


def test_snapshot_store_replaces_file_without_leftovers(store: SnapshotStore) -> None:
    store.save(signed_config(make_snapshot(version=1)))
    store.save(signed_config(make_snapshot(version=2)))

    assert [p.name for p in store.path.parent.iterdir()] == ["snapshot.json"]
    loaded = store.load()
    assert loaded is not None
    assert loaded.version == 2


def test_snapshot_verifier_rejects_snapshot_for_another_machine() -> None:
    payload = signed_config(make_snapshot(machine="cnc"))

    with pytest.raises(ProtocolError, match=r"snapshot\.machine"):
        VERIFIER.verify(payload)


def test_snapshot_verifier_rejects_snapshot_for_another_controller() -> None:
    payload = signed_config(make_snapshot(controller_id="ctrl-other"))

    with pytest.raises(ProtocolError, match=r"snapshot\.controller_id"):
        VERIFIER.verify(payload)


def test_snapshot_verifier_rejects_bad_signature() -> None:
    with pytest.raises(SignatureError):
        VERIFIER.verify(signed_config(key=b"y" * 32))


def test_snapshot_verifier_rejects_version_not_newer_than_held() -> None:
    with pytest.raises(StaleSnapshotError):
        VERIFIER.verify(signed_config(make_snapshot(version=3)), held_version=3)

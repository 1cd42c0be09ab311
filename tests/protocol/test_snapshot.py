"""protocol.snapshot: the signed, versioned config and badge digests."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    Level,
    MachineSettings,
    Mode,
    PermissionEntry,
    PermissionSnapshot,
    ProtocolError,
    SignatureError,
    StaleSnapshotError,
    badge_digest,
    encode_config,
    normalize_uid,
    verify_config,
)
from tests.protocol.strategies import snapshots

KEY = b"controller-key-laser-1-0123456789abcdef"
OTHER_KEY = b"controller-key-cnc-1-0123456789abcdef"


def _snapshot(version: int = 3) -> PermissionSnapshot:
    return PermissionSnapshot(
        site="lab",
        machine="laser-1",
        controller_id="ctl-laser-1",
        version=version,
        issued_at=1_760_000_000,
        settings=MachineSettings(name="Laser cutter", mode=Mode.TOGGLE, idle_timeout_s=900),
        permissions=(
            PermissionEntry(badge_digest(KEY, "04A1B2C3"), "m-ada", Level.AUTONOMOUS),
            PermissionEntry(badge_digest(KEY, "04D4E5F6"), "m-bob", Level.TRAINER, 1_790_000_000),
        ),
    )


def _sign(body: dict[str, Any], key: bytes = KEY) -> bytes:
    """Sign like the contract says, independently of protocol/: canonical JSON of `snapshot`."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    signature = hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"schema_version": 1, "snapshot": body, "signature": signature}).encode()


# -- sign / verify -----------------------------------------------------------------------


@given(snapshots)
def test_config_sign_verify_round_trips(snapshot: PermissionSnapshot) -> None:
    assert verify_config(encode_config(snapshot, KEY), KEY) == snapshot


def test_config_signature_is_hmac_sha256_of_canonical_snapshot() -> None:
    snapshot = _snapshot()
    assert json.loads(encode_config(snapshot, KEY)) == json.loads(_sign(snapshot.to_dict()))


def test_config_verify_ignores_key_order_and_spacing_outside_the_signature() -> None:
    snapshot = _snapshot()
    signed = json.loads(encode_config(snapshot, KEY))
    reordered = {
        "signature": signed["signature"],
        "snapshot": dict(reversed(signed["snapshot"].items())),
        "schema_version": 1,
    }
    assert verify_config(json.dumps(reordered, indent=2), KEY) == snapshot


def test_config_lookup_finds_a_badge_by_digest() -> None:
    snapshot = verify_config(encode_config(_snapshot(), KEY), KEY)
    entry = snapshot.lookup(badge_digest(KEY, "04:a1:b2:c3"))
    assert entry is not None and entry.member_id == "m-ada"
    assert snapshot.lookup(badge_digest(KEY, "DEADBEEF")) is None


def test_config_verify_with_wrong_key_raises_signature_error() -> None:
    with pytest.raises(SignatureError) as err:
        verify_config(encode_config(_snapshot(), KEY), OTHER_KEY)
    assert err.value.field == "signature"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b.update(version=b["version"] + 1),
        lambda b: b["permissions"][0].update(level="trainer"),
        lambda b: b["permissions"][0].update(member_id="m-mallory"),
        lambda b: b["permissions"].append(dict(b["permissions"][0], member_id="m-eve")),
        lambda b: b["permissions"].pop(),
        lambda b: b["settings"].update(out_of_service=True),
        lambda b: b.update(extra="field"),
    ],
)
def test_config_tampered_body_raises_signature_error(tamper: Any) -> None:
    signed = json.loads(encode_config(_snapshot(), KEY))
    tamper(signed["snapshot"])
    with pytest.raises(SignatureError):
        verify_config(json.dumps(signed), KEY)


def test_config_tampered_signature_raises_signature_error() -> None:
    signed = json.loads(encode_config(_snapshot(), KEY))
    last = signed["signature"][-1]
    signed["signature"] = signed["signature"][:-1] + ("0" if last != "0" else "1")
    with pytest.raises(SignatureError):
        verify_config(json.dumps(signed), KEY)


@pytest.mark.parametrize("held", [3, 4, 100])
def test_config_older_or_equal_version_raises_stale_snapshot_error(held: int) -> None:
    with pytest.raises(StaleSnapshotError) as err:
        verify_config(encode_config(_snapshot(version=3), KEY), KEY, held_version=held)
    assert err.value.field == "snapshot.version"


def test_config_newer_version_is_accepted() -> None:
    payload = encode_config(_snapshot(version=3), KEY)
    assert verify_config(payload, KEY, held_version=2).version == 3


def test_config_signature_is_checked_before_staleness() -> None:
    # A forged old snapshot reports the forgery, not just "stale".
    with pytest.raises(SignatureError):
        verify_config(encode_config(_snapshot(version=1), OTHER_KEY), KEY, held_version=2)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("settings"), "snapshot.settings"),
        (lambda b: b.update(version=0), "snapshot.version"),
        (lambda b: b.update(version="3"), "snapshot.version"),
        (lambda b: b.update(machine=""), "snapshot.machine"),
        (lambda b: b.update(permissions={}), "snapshot.permissions"),
        (lambda b: b["permissions"].append("m-ada"), "snapshot.permissions[2]"),
        (lambda b: b["permissions"][1].update(level="god"), "snapshot.permissions[1].level"),
        (lambda b: b["permissions"][0].pop("badge_digest"),
         "snapshot.permissions[0].badge_digest"),
        (lambda b: b["settings"].update(mode="pulse"), "snapshot.settings.mode"),
        (lambda b: b["settings"].update(heartbeat_interval_s=0),
         "snapshot.settings.heartbeat_interval_s"),
        (lambda b: b["settings"].update(out_of_service="no"), "snapshot.settings.out_of_service"),
    ],
)  # fmt: skip
def test_config_malformed_body_signed_correctly_raises_protocol_error(
    mutate: Any, field: str
) -> None:
    body = _snapshot().to_dict()
    mutate(body)
    with pytest.raises(ProtocolError) as err:
        verify_config(_sign(body), KEY)
    assert not isinstance(err.value, SignatureError)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"not json", "config"),
        (b"[]", "config"),
        (b'{"schema_version": 2, "snapshot": {}, "signature": "x"}', "schema_version"),
        (b'{"schema_version": 1, "signature": "x"}', "snapshot"),
        (b'{"schema_version": 1, "snapshot": {}}', "signature"),
        (b'{"schema_version": 1, "snapshot": [], "signature": "x"}', "snapshot"),
        (b'{"schema_version": 1, "snapshot": {"a": "\\ud800"}, "signature": "x"}', "config"),
    ],
)
def test_config_malformed_envelope_raises_protocol_error(payload: bytes, field: str) -> None:
    with pytest.raises(ProtocolError) as err:
        verify_config(payload, KEY)
    assert err.value.field == field


@given(
    snapshot=snapshots,
    position=st.floats(min_value=0, max_value=1, exclude_max=True),
    byte=st.integers(min_value=0, max_value=255),
)
def test_config_single_byte_mutation_fails_or_changes_nothing(
    snapshot: PermissionSnapshot, position: float, byte: int
) -> None:
    payload = bytearray(encode_config(snapshot, KEY))
    index = int(position * len(payload))
    if payload[index] == byte:
        byte ^= 0xFF
    payload[index] = byte
    try:
        verified = verify_config(bytes(payload), KEY)
    except ProtocolError:
        return
    assert verified == snapshot


# -- badge digests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling", ["04A1B2C3", "04:a1:b2:c3", "04-A1-B2-C3", " 04 a1 b2 c3 ", "04a1b2c3"]
)
def test_badge_digest_is_stable_across_uid_spellings(spelling: str) -> None:
    assert badge_digest(KEY, spelling) == badge_digest(KEY, "04A1B2C3")
    assert normalize_uid(spelling) == "04A1B2C3"


def test_badge_digest_differs_across_keys_and_uids() -> None:
    assert badge_digest(KEY, "04A1B2C3") != badge_digest(OTHER_KEY, "04A1B2C3")
    assert badge_digest(KEY, "04A1B2C3") != badge_digest(KEY, "04A1B2C4")


def test_badge_digest_is_32_hex_characters() -> None:
    digest = badge_digest(KEY, "04A1B2C3")
    assert len(digest) == 32
    int(digest, 16)


@given(uid=st.from_regex(r"[0-9A-Fa-f]{4,40}", fullmatch=True), key=st.binary(min_size=16))
def test_badge_digest_of_normalized_uid_is_the_same(uid: str, key: bytes) -> None:
    assert badge_digest(key, uid) == badge_digest(key, normalize_uid(uid))


@pytest.mark.parametrize("bad", ["", "04A", "XYZ123", "04A1B2C3G", "0" * 41, "04_A1_B2"])
def test_normalize_uid_rejects_non_hex(bad: str) -> None:
    with pytest.raises(ProtocolError) as err:
        normalize_uid(bad)
    assert err.value.field == "badge_uid"


# -- settings and staff added for issue 3 -------------------------------------------------


def test_snapshot_optional_settings_are_omitted_at_default() -> None:
    from protocol import MachineSettings

    assert "warning_s" not in MachineSettings(name="x").to_dict()
    settings = MachineSettings(
        name="x", warning_s=30, card_removal_grace_s=5, supervisor_window_s=10
    )
    d = settings.to_dict()
    assert (d["warning_s"], d["card_removal_grace_s"], d["supervisor_window_s"]) == (30, 5, 10)
    assert MachineSettings.from_dict(d) == settings


def test_snapshot_anticlone_fields_are_omitted_at_default_and_round_trip() -> None:
    plain = PermissionEntry(badge_digest(KEY, "04A1B2C3"), "m-ada", Level.AUTONOMOUS)
    protected = PermissionEntry(plain.badge_digest, "m-ada", Level.AUTONOMOUS, protected=True)
    strict = MachineSettings(name="x", plain_badges_allowed=False)

    assert "protected" not in plain.to_dict()
    assert "plain_badges_allowed" not in MachineSettings(name="x").to_dict()
    assert PermissionEntry.from_dict(protected.to_dict(), "p.") == protected
    assert MachineSettings.from_dict(strict.to_dict()) == strict


def test_snapshot_settings_from_older_server_get_defaults() -> None:
    from protocol import MachineSettings

    d = {
        "name": "x",
        "mode": "hold",
        "idle_timeout_s": 0,
        "max_duration_s": 0,
        "heartbeat_interval_s": 60,
        "out_of_service": False,
        "out_of_service_reason": None,
    }
    settings = MachineSettings.from_dict(d)
    assert (settings.warning_s, settings.card_removal_grace_s, settings.supervisor_window_s) == (
        60,
        3,
        30,
    )


def test_snapshot_staff_round_trip_and_lookup() -> None:
    from dataclasses import replace

    from protocol import StaffEntry, StaffRole

    staff = StaffEntry(
        badge_digest(KEY, "04FFEE01"),
        "m-manager",
        (StaffRole.MANAGER, StaffRole.SUPERVISOR),
        expires_at=2_000_000_000,
    )
    snapshot = _snapshot()
    with_staff = replace(snapshot, staff=(staff,))
    decoded = verify_config(encode_config(with_staff, KEY), KEY)
    assert decoded == with_staff
    assert decoded.lookup_staff(staff.badge_digest) == staff
    assert decoded.lookup_staff(badge_digest(KEY, "04A1B2C3")) is None
    assert staff.has(StaffRole.MANAGER, 1_999_999_999)
    assert not staff.has(StaffRole.MANAGER, 2_000_000_000)
    assert "staff" not in snapshot.to_dict()


def test_snapshot_staff_bad_role_names_field() -> None:
    body = _snapshot().to_dict()
    body["staff"] = [
        {"badge_digest": "ab" * 16, "member_id": "m", "roles": ["janitor"], "expires_at": None}
    ]
    with pytest.raises(ProtocolError) as info:
        verify_config(_sign(body), KEY)
    assert info.value.field == "snapshot.staff[0].roles[0]"

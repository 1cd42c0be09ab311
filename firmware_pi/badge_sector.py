"""The anti-cloning sector of a MIFARE Classic badge: diversified keys, counter and MAC.

Pure (no I/O): the MFRC522 reader moves the blocks this module builds and checks.

One sector of the card (`BadgeKeys.sector`, 1 by default) holds:
- its first block, 16 bytes: `FB` (magic), layout version 1, the counter (4 bytes,
  big-endian), the MAC (9 bytes) = HMAC-SHA256(MAC key, "badge-mac" || UID || counter)
  truncated, where the MAC key = HMAC-SHA256(master key, "badge-mac-key");
- its trailer: key A and key B, each diversified per card = HMAC-SHA256(master key,
  "sector-key-a" / "sector-key-b" || UID) truncated to 6 bytes (never a default key
  such as FFFFFFFFFFFF), and the transport access bits (FF 07 80): key A reads and
  writes the data blocks.

Only the site's master key (in each controller's config) makes either: a copy of the
UID alone has no sector, and a sector copied from another card has another card's
MAC. A copy of the whole sector is caught by the counter (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from enum import StrEnum

from protocol import normalize_uid

MAGIC = b"FB"
LAYOUT_VERSION = 1
MAC_BYTES = 9
MAX_COUNTER = 2**32 - 1
BLOCK_BYTES = 16
# Keys a badge must never be protected with: the transport key and the well-known ones.
DEFAULT_KEYS = frozenset(
    bytes.fromhex(k) for k in ("FFFFFFFFFFFF", "000000000000", "A0A1A2A3A4A5", "D3F7D3F7D3F7")
)
TRANSPORT_KEY = bytes.fromhex("FFFFFFFFFFFF")
ACCESS_BITS = bytes.fromhex("FF078069")  # transport configuration, GPB 0x69
MIN_MASTER_KEY_BYTES = 16


class SectorStatus(StrEnum):
    VALID = "valid"  # the sector authenticated and its MAC verifies
    MISSING = "missing"  # no sector under the diversified key (a plain badge, or a copy)
    MAC_INVALID = "mac_invalid"  # the sector authenticated but its content is not ours


@dataclass(frozen=True)
class SectorRead:
    """What a tap found in the badge's anti-cloning sector."""

    status: SectorStatus
    counter: int | None = None


MISSING = SectorRead(SectorStatus.MISSING)


def _uid_bytes(uid: str) -> bytes:
    return bytes.fromhex(normalize_uid(uid))


@dataclass(frozen=True)
class BadgeKeys:
    """Derives one card's keys and MAC from the site's master key."""

    master_key: bytes = field(repr=False)
    sector: int = 1

    def __post_init__(self) -> None:
        if len(self.master_key) < MIN_MASTER_KEY_BYTES:
            raise ValueError(f"the badge master key needs {MIN_MASTER_KEY_BYTES} bytes or more")
        if not 1 <= self.sector <= 15:
            raise ValueError("the badge sector is one of 1 to 15 (sector 0 holds the UID)")

    @property
    def data_block(self) -> int:
        """Block number of the sector's counter + MAC block."""
        return 4 * self.sector

    @property
    def trailer_block(self) -> int:
        """Block number of the sector's trailer (keys and access bits)."""
        return 4 * self.sector + 3

    def _key(self, label: bytes, uid: str) -> bytes:
        uid_bytes = _uid_bytes(uid)
        for attempt in range(256):  # a default key out of HMAC is a 2^-46 event, handled
            key = hmac.new(
                self.master_key, label + bytes([attempt]) + uid_bytes, hashlib.sha256
            ).digest()[:6]
            if key not in DEFAULT_KEYS:
                return key
        raise AssertionError("unreachable: 256 default keys in a row")  # pragma: no cover

    def key_a(self, uid: str) -> bytes:
        """The card's sector key A (reads and writes the counter block)."""
        return self._key(b"sector-key-a", uid)

    def key_b(self, uid: str) -> bytes:
        """The card's sector key B."""
        return self._key(b"sector-key-b", uid)

    def mac(self, uid: str, counter: int) -> bytes:
        mac_key = hmac.new(self.master_key, b"badge-mac-key", hashlib.sha256).digest()
        message = b"badge-mac" + _uid_bytes(uid) + counter.to_bytes(4, "big")
        return hmac.new(mac_key, message, hashlib.sha256).digest()[:MAC_BYTES]

    def counter_block(self, uid: str, counter: int) -> bytes:
        """The 16 bytes of the counter block for `counter`."""
        if not 0 <= counter <= MAX_COUNTER:
            raise ValueError(f"counter {counter} out of range")
        return (
            MAGIC + bytes([LAYOUT_VERSION]) + counter.to_bytes(4, "big") + self.mac(uid, counter)
        )

    def trailer(self, uid: str) -> bytes:
        """The 16 bytes of the sector trailer: diversified keys A and B, access bits."""
        return self.key_a(uid) + ACCESS_BITS + self.key_b(uid)

    def check(self, uid: str, block: bytes | None) -> SectorRead:
        """Verify a counter block read from the card (None: it could not be read)."""
        if block is None:
            return MISSING
        if len(block) != BLOCK_BYTES or block[:3] != MAGIC + bytes([LAYOUT_VERSION]):
            return SectorRead(SectorStatus.MAC_INVALID)
        counter = int.from_bytes(block[3:7], "big")
        if not hmac.compare_digest(block[7:], self.mac(uid, counter)):
            return SectorRead(SectorStatus.MAC_INVALID)
        return SectorRead(SectorStatus.VALID, counter)

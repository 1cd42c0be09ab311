"""HMAC-SHA256 signatures over canonical JSON, with a domain label per payload type.

The label (b"fablab-command:", b"fablab-auth-response:") goes in front of the canonical
body, so that a body signed as one type can never verify as another. The config's
signature predates the labels and is computed over the bare body (docs/protocol.md).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from protocol._fields import canonical
from protocol.errors import SignatureError


def sign(key: bytes, domain: bytes, body: Mapping[str, Any]) -> str:
    """Lowercase hex HMAC-SHA256 of `domain + canonical(body)` under `key`."""
    return hmac.new(key, domain + canonical(body), hashlib.sha256).hexdigest()


def check(key: bytes, domain: bytes, body: Mapping[str, Any], signature: str) -> None:
    """SignatureError unless `signature` is the signature of `body` (constant time)."""
    if not hmac.compare_digest(signature, sign(key, domain, body)):
        raise SignatureError("signature", "does not match the controller key")

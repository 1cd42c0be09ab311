"""Small typed readers over decoded JSON that raise ProtocolError naming the field."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeVar

from protocol.errors import ProtocolError

E = TypeVar("E", bound=Enum)

MAX_PAYLOAD_BYTES = 256 * 1024
# Every integer on the wire fits a signed 64-bit column (seqs, versions, times).
MAX_INT = 2**63 - 1


def load_object(payload: bytes | str, what: str) -> dict[str, Any]:
    """Parse a JSON object, refusing oversized or non-object payloads."""
    # Strict UTF-8 decoding lets no surrogate through: only an escape can make one.
    may_hold_surrogates = True
    if isinstance(payload, bytes | bytearray):
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ProtocolError(what, f"payload larger than {MAX_PAYLOAD_BYTES} bytes")
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(what, "payload is not UTF-8") from exc
        may_hold_surrogates = "\\ud" in payload or "\\uD" in payload
    try:
        obj = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ProtocolError(what, f"invalid JSON ({exc.msg})") from exc
    except RecursionError as exc:  # "[[[[…" well under the size limit
        raise ProtocolError(what, "JSON nested too deeply") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(what, "must be a JSON object")
    # A "\ud800" escape decodes to a lone surrogate, which cannot be encoded again as
    # UTF-8 (to store, sign or forward it): refuse it here rather than crash later.
    if may_hold_surrogates:
        try:
            dump(obj)
        except UnicodeEncodeError as exc:
            raise ProtocolError(what, "contains an unpaired UTF-16 surrogate") from exc
    return obj


def dump(obj: Mapping[str, Any]) -> bytes:
    """Compact JSON encoding used on the wire."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def canonical(obj: Mapping[str, Any]) -> bytes:
    """Deterministic JSON (sorted keys, no spaces) over which signatures are computed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _get(d: Mapping[str, Any], key: str, prefix: str) -> Any:
    if key not in d:
        raise ProtocolError(prefix + key, "is required")
    return d[key]


def req_str(d: Mapping[str, Any], key: str, prefix: str = "", *, max_len: int = 200) -> str:
    value = _get(d, key, prefix)
    if not isinstance(value, str) or not value:
        raise ProtocolError(prefix + key, "must be a non-empty string")
    if len(value) > max_len:
        raise ProtocolError(prefix + key, f"longer than {max_len} characters")
    return value


def opt_str(d: Mapping[str, Any], key: str, prefix: str = "", *, max_len: int = 200) -> str | None:
    if d.get(key) is None:
        return None
    return req_str(d, key, prefix, max_len=max_len)


def req_int(
    d: Mapping[str, Any], key: str, prefix: str = "", *, minimum: int = 0, maximum: int = MAX_INT
) -> int:
    value = _get(d, key, prefix)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(prefix + key, "must be an integer")
    if value < minimum:
        raise ProtocolError(prefix + key, f"must be >= {minimum}")
    if value > maximum:
        raise ProtocolError(prefix + key, f"must be <= {maximum}")
    return value


def opt_int(d: Mapping[str, Any], key: str, prefix: str = "", *, minimum: int = 0) -> int | None:
    if d.get(key) is None:
        return None
    return req_int(d, key, prefix, minimum=minimum)


def req_float(
    d: Mapping[str, Any],
    key: str,
    prefix: str = "",
    *,
    minimum: float = 0.0,
    maximum: float = math.inf,
) -> float:
    value = _get(d, key, prefix)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(prefix + key, "must be a number")
    try:
        value = float(value)
    except OverflowError:  # an integer too large for a float
        raise ProtocolError(prefix + key, f"must be a finite number <= {maximum}") from None
    if not math.isfinite(value) or value < minimum:
        raise ProtocolError(prefix + key, f"must be a finite number >= {minimum}")
    if value > maximum:
        raise ProtocolError(prefix + key, f"must be <= {maximum:g}")
    return value


def req_bool(d: Mapping[str, Any], key: str, prefix: str = "") -> bool:
    value = _get(d, key, prefix)
    if not isinstance(value, bool):
        raise ProtocolError(prefix + key, "must be true or false")
    return value


def req_enum(d: Mapping[str, Any], key: str, enum: type[E], prefix: str = "") -> E:
    value = _get(d, key, prefix)
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in enum)
        raise ProtocolError(prefix + key, f"must be one of: {allowed}") from None


def req_object(d: Mapping[str, Any], key: str, prefix: str = "") -> dict[str, Any]:
    value = _get(d, key, prefix)
    if not isinstance(value, dict):
        raise ProtocolError(prefix + key, "must be an object")
    return value


def req_list(d: Mapping[str, Any], key: str, prefix: str = "") -> list[Any]:
    value = _get(d, key, prefix)
    if not isinstance(value, list):
        raise ProtocolError(prefix + key, "must be a list")
    return value


def check_schema_version(d: Mapping[str, Any], supported: int) -> None:
    version = req_int(d, "schema_version", minimum=1)
    if version != supported:
        raise ProtocolError(
            "schema_version", f"unsupported version {version} (expected {supported})"
        )

"""The errors that decoding and verification raise."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A payload that does not follow the contract; `field` names the bad part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SignatureError(ProtocolError):
    """A signed snapshot whose signature does not match the controller's key."""


class StaleSnapshotError(ProtocolError):
    """A snapshot whose version is not newer than the one already held."""


class ExpiredError(ProtocolError):
    """A signed command (or answer) used outside its validity window."""


class ReplayError(ProtocolError):
    """A signed command whose id was already seen: a replay, ignored."""

"""Passwords (argon2id), random tokens and their hashes, Mosquitto password hashes."""

from __future__ import annotations

import base64
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the email is unknown, so that timing does not tell who has an account.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

MOSQUITTO_ITERATIONS = 101  # mosquitto_passwd's default for its $7$ PBKDF2-SHA512 format


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if the password matches; a missing hash still costs one verification."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A URL-safe random secret (256 bits)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What is stored of a token: its SHA-256 (tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def mosquitto_password_hash(password: str, *, salt: bytes | None = None) -> str:
    """A `mosquitto_passwd` compatible `$7$` hash (PBKDF2-SHA512), for the broker's file."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, MOSQUITTO_ITERATIONS)
    encoded_salt = base64.b64encode(salt).decode()
    encoded_digest = base64.b64encode(digest).decode()
    return f"$7${MOSQUITTO_ITERATIONS}${encoded_salt}${encoded_digest}"

"""Errors the service layer raises; the API maps them to 4xx answers."""

from __future__ import annotations


class DomainError(Exception):
    """A request that the lab's rules refuse; the message is shown to the user."""


class NotFoundError(DomainError):
    pass


class ConflictError(DomainError):
    pass


class PermissionDeniedError(DomainError):
    """The acting person may not do this."""


class AuthenticationError(DomainError):
    """Wrong email or password, or an expired login."""


class TooManyAttemptsError(DomainError):
    """Too many attempts of a guarded action (a password check…): wait and retry."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

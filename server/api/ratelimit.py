"""The login limiter (per client address and per email): the service layer's AttemptLimiter."""

from __future__ import annotations

from server.service_layer.ratelimit import AttemptLimiter

LoginRateLimiter = AttemptLimiter

__all__ = ["LoginRateLimiter"]

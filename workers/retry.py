"""Retry policy decisions: pure, time and randomness passed in."""

from __future__ import annotations

from regionmesh.workers.definitions import RetryPolicy


def backoff_s(policy: RetryPolicy, attempt: int, jitter: float) -> float:
    """Delay before the try after ``attempt`` (1-based); ``jitter`` in [0, 1) scales into [0.5, 1]."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    raw = min(policy.max_s, policy.base_s * 2.0 ** (attempt - 1))
    return raw * (0.5 + 0.5 * jitter)


def should_retry(policy: RetryPolicy, attempt: int) -> bool:
    """Whether a failure on try ``attempt`` (1-based) gets another try."""
    return attempt < policy.max_attempts

"""Retry policy decisions: pure, time and randomness passed in."""

from __future__ import annotations

from regionmesh.backoff import compute_backoff
from regionmesh.workers.definitions import RetryPolicy


def backoff_s(policy: RetryPolicy, attempt: int, jitter: float) -> float:
    """Delay before the try after ``attempt`` (1-based); ``jitter`` in [0, 1) scales into [0.5, 1]."""
    return compute_backoff(attempt, base_s=policy.base_s, max_s=policy.max_s, jitter=jitter)


def should_retry(policy: RetryPolicy, attempt: int) -> bool:
    """Whether a failure on try ``attempt`` (1-based) gets another try."""
    return attempt < policy.max_attempts

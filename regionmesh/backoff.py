"""The one backoff formula: step retries, infrastructure retries and the outbox use it."""

from __future__ import annotations


def compute_backoff(attempt: int, *, base_s: float, max_s: float, jitter: float) -> float:
    """Delay after failed try ``attempt`` (1-based): ``base_s·2^(attempt-1)`` capped at ``max_s``,
    scaled by ``jitter`` in [0, 1) into [0.5, 1] of that (so concurrent retries spread out).

    Raises ValueError for an attempt below 1 or a jitter outside [0, 1).
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    # Cap the exponent first: 2.0 ** 10_000 overflows a float.
    raw = min(max_s, base_s * 2.0 ** min(attempt - 1, 62))
    return raw * (0.5 + 0.5 * jitter)

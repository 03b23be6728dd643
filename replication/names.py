"""Replication wire names: the publication, and one subscription (and slot) per ordered pair."""

from __future__ import annotations

PUBLICATION = "rm_pub"


def subscription_name(subscriber: str, publisher: str) -> str:
    """``rm_<subscriber>_from_<publisher>``; '-' becomes '_' (slot names allow [a-z0-9_] only)."""
    return f"rm_{subscriber}_from_{publisher}".replace("-", "_")

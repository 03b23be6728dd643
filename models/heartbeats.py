"""Heartbeat rows: one per region, bumped every second by that region only."""

from __future__ import annotations

from sqlalchemy import Engine, text


def beat(engine: Engine, region: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                """INSERT INTO heartbeats (region, beat_at, seq) VALUES (:r, clock_timestamp(), 1)
                   ON CONFLICT (region) DO UPDATE SET beat_at = clock_timestamp(), seq = heartbeats.seq + 1"""
            ),
            {"r": region},
        )

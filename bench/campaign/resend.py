"""The batch and raw producers' gap-closer (the client producers have their journal): every 5 s,
what the region it was sent to does not hold (no run, no dead letter) after ``RESEND_AFTER_S`` is
sent again, same key (so the same run) under a fresh submission id, itself an acknowledged publish
the checker accounts for."""

from __future__ import annotations

import time

from bench.campaign.mesh import CampaignMesh
from bench.campaign.record import RESEND_AFTER_S, Record, Sent
from regionmesh.models import residency, runs
from regionmesh.workers.submission import run_id_for


class Resender:
    def __init__(self, mesh: CampaignMesh, record: Record) -> None:
        self.mesh = mesh
        self.record = record

    def loop(self) -> None:
        """Forever (a daemon thread): the campaign ends while it sleeps."""
        while True:
            time.sleep(5)
            try:
                self.resend_missing()
            except Exception as exc:
                self.record.note(f"resend: {type(exc).__name__}: {exc}")

    def resend_missing(self) -> None:
        now = time.time()
        with self.record.sent_lock:
            todo = [s for s in self.record.sent
                    if s.resend is not None and not s.held and now - s.last_sent > RESEND_AFTER_S]
        by_via: dict[str, list[Sent]] = {}
        for s in todo:
            by_via.setdefault(s.ack.via, []).append(s)
        for via, items in by_via.items():
            engine = self.mesh.engines[via]
            try:
                ids = [run_id_for(s.ack.tenant, s.ack.key) for s in items]
                held = set(runs.statuses(engine, ids))
                held |= residency.summarized(engine, [i for i in ids if i not in held])  # zoned, outside the zone
                dead = {s.sid for s in items if run_id_for(s.ack.tenant, s.ack.key) not in held
                        and runs.dead_letters(engine, 1, submission_id=s.sid)}
            except Exception:  # the region is away: its submissions wait with it
                continue
            for s in items:
                if run_id_for(s.ack.tenant, s.ack.key) in held or s.sid in dead:
                    s.held = True
                    continue
                assert s.resend is not None  # todo holds only what a producer sends again itself
                try:
                    s.first_resend = s.first_resend or time.time()
                    self.record.resent(s.ack, s.resend(s.sends))
                    s.sends += 1
                    s.last_sent = time.time()
                    self.record.stats.resent[s.ack.path] += 1
                except Exception as exc:  # the broker is away: next pass
                    self.record.note(f"re-send to {via}: {type(exc).__name__}")

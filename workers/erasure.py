"""The reconciler's erasure job: this region applies tenant erasures it has not confirmed.

It runs whether or not the region holds a lease (erasing creates no work), so a region that was
down erases and confirms as soon as the receipt has reached it by replication. A failure is
logged and left to the next pass; it never stops the reconciler's other jobs.
"""

from __future__ import annotations

import logging

from regionmesh.log import event
from regionmesh.replication.erasure import sweep
from regionmesh.workers.runtime import Runtime


class ErasureJob:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.finished: set[tuple[str, int]] = set()  # (tenant hash, epoch) given their last pass here

    def __call__(self) -> None:
        try:
            removed = sweep(self.rt.engine, self.rt.region, self.finished)
        except Exception as exc:  # the next pass tries again
            event(logging.WARNING, "erasure.sweep_failed", region=self.rt.region, error=type(exc).__name__)
            return
        for tenant_hash, rows in removed.items():
            # The hash, never the tenant id: the receipt's key.
            event(logging.INFO, "erasure.applied", region=self.rt.region, tenant_hash=tenant_hash[:16],
                  rows=sum(rows.values()))

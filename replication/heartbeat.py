"""The region's heartbeat row, updated every second by the active reconciler.

Peers read ``now() - beat_at`` of this row, as replicated to them, as apply lag.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from regionmesh.models import heartbeats
from regionmesh.models import replication as repl

if TYPE_CHECKING:
    from regionmesh.workers.runtime import Runtime


def heartbeat_job(rt: Runtime) -> Callable[[], None]:
    def beat() -> None:
        heartbeats.beat(rt.engine, rt.region)
        repl.observe_link_errors(rt.engine)

    return beat

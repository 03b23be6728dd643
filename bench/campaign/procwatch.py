"""The checker's own view of when pool processes end (issue 20: an oracle that does not trust the
product).

A handler that never took effect has no end in the ledger. The product ends some processes itself
(the step limit's hard end SIGKILLs a pool process whose handler swallowed its timeout; Celery
replaces it), and those ends are in no fault record: without them the checker would let such an
execution last until a later fault killed its region, and read the product's correct retry as an
overlap. So a thread polls every region's workers for their pool processes and notes, for each pid
it saw, the first poll that found it gone. That time is an upper bound of the process's death (it
died before that poll), taken from the operating system, not from anything the product says.
"""

from __future__ import annotations

import threading
import time

import psutil

from regionmesh.ops.devmesh import DevMesh

POLL_S = 0.2
MAINS_EVERY = 5  # polls between reads of the dev mesh's worker list (a file under a lock)


class ProcessWatch:
    def __init__(self, dev: DevMesh, regions: list[str], stop: threading.Event) -> None:
        self.dev, self.regions, self.stop = dev, regions, stop
        self.alive: dict[tuple[str, int], float] = {}  # (region, pid) -> first seen
        self.gone: dict[tuple[str, int], float] = {}  # (region, pid) -> first poll that missed it
        self.mains: dict[int, str] = {}  # worker main pid -> region

    def thread(self) -> threading.Thread:
        return threading.Thread(target=self.loop, name="procwatch", daemon=True)

    def loop(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                if n % MAINS_EVERY == 0:
                    self.mains = {w.pid: region for region in self.regions for w in self.dev.workers(region)
                                  if w.pid is not None}
                self.poll()
            except Exception:  # noqa: S110 - a missed poll only loosens a bound (the checker stays strict)
                pass
            n += 1
            self.stop.wait(POLL_S)

    def poll(self) -> None:
        """One pass over the process table: every worker main's descendants, by region."""
        parent: dict[int, int] = {}
        running: set[int] = set()
        for proc in psutil.process_iter(["pid", "ppid", "status"]):
            if proc.info["status"] != psutil.STATUS_ZOMBIE:
                parent[proc.info["pid"]] = proc.info["ppid"]
                running.add(proc.info["pid"])
        now = time.time()
        for pid in running:
            up, hops = pid, 0
            while up in parent and up not in self.mains and hops < 4:
                up, hops = parent[up], hops + 1
            if up in self.mains:
                self.alive.setdefault((self.mains[up], pid), now)
        for key in set(self.alive) - set(self.gone):
            if key[1] not in running:
                self.gone[key] = now

    def exits(self) -> dict[tuple[str, int], float]:
        """(region, pid) -> an upper bound of when the process ended, for every process seen to end."""
        return dict(self.gone)

"""A loop that runs in one process per region at a time: the holder of a PostgreSQL advisory lock.

Every worker runs the thread; only the one holding the region's lock works. When that worker
dies its session closes, the lock frees, and another worker's thread takes over.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Connection

from regionmesh.log import event
from regionmesh.models.locks import still_connected, try_session_lock
from regionmesh.workers.runtime import Runtime


class SingletonLoop(threading.Thread):
    def __init__(self, rt: Runtime, lock_name: str, interval_s: float) -> None:
        super().__init__(name=f"rm-{lock_name}-{rt.region}", daemon=True)
        self.rt = rt
        self.lock_name = lock_name
        self.interval_s = interval_s
        self.stopping = threading.Event()
        self.active = threading.Event()
        self._lock_conn: Connection | None = None

    def step(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()

    def _hold_lock(self) -> bool:
        if self._lock_conn is not None:
            if still_connected(self._lock_conn):
                return True
            self._drop_lock()  # the server restarted: the lock went with the session
        conn = self.rt.engine.connect()
        if try_session_lock(conn, f"{self.lock_name}:{self.rt.region}"):
            conn.commit()
            self._lock_conn = conn
            self.active.set()
            event(logging.INFO, f"{self.lock_name}.active", region=self.rt.region, worker=self.rt.worker_id)
            return True
        conn.rollback()
        conn.close()
        return False

    def _drop_lock(self) -> None:
        if self._lock_conn is not None:
            try:
                self._lock_conn.close()
            except Exception as exc:  # the session is gone either way
                event(logging.DEBUG, f"{self.lock_name}.lock_close_failed", region=self.rt.region, error=exc)
        self._lock_conn = None
        self.active.clear()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                if self._hold_lock():
                    self.step()
            except Exception as exc:  # keep the loop alive through outages
                event(logging.WARNING, f"{self.lock_name}.error", region=self.rt.region, error=exc)
                self._drop_lock()
            self.stopping.wait(self.interval_s)
        self._drop_lock()

"""A region's processes besides its servers: celery workers, Flower and the metrics endpoint.

Each is recorded in the state file (name, log, no pid) before it is spawned and again with its
pid after, under the state file's lock.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from regionmesh.errors import DevMeshError
from regionmesh.host import pid_alive
from regionmesh.names import steps_queue, submit_queue
from regionmesh.ops.devmesh.folder import HOST
from regionmesh.ops.devmesh.state import ProcessState, StateFile
from regionmesh.supervisor import free_port, kill_tree, spawn, terminate, wait_for

DEV_WORKER_TIMERS = {
    "REGIONMESH_RECONCILE_INTERVAL_S": "0.5",
    "REGIONMESH_REQUEUE_AFTER_S": "5",
    "REGIONMESH_FORWARD_CONFIRM_S": "10",
    "REGIONMESH_LEASE_S": "6",  # every region of a mesh runs the same lease settings
}


def metrics_dir(root: Path, region: str) -> Path:
    path = root / "metrics" / region
    path.mkdir(parents=True, exist_ok=True)
    return path


def live_workers(store: StateFile, region: str) -> list[ProcessState]:
    """Live celery workers of ``region`` (not Flower or metrics)."""
    state = store.load()
    entry = state.regions.get(region)
    return [w for w in (entry.workers if entry else []) if w.is_worker and pid_alive(w.pid)]


def start_worker(store: StateFile, mesh_file: Path, region: str, *, concurrency: int = 2,
                 extra_env: dict[str, str] | None = None, wait: bool = True) -> ProcessState:
    """Start one ``celery worker`` for ``region`` (recorded before it starts). Returns its record.
    Raises DevMeshError when it exits or is not ready within 60 s."""
    root = store.path.parent
    with store.locked():
        state = store.load()
        workers = state.region(region).workers
        n = len(workers) + 1
        while any(w.name == f"w{n}" for w in workers):
            n += 1
        name = f"w{n}"
        log = root / "logs" / f"worker-{region}-{name}.log"
        record = ProcessState(name=name, log=log, env=dict(extra_env or {}))
        workers.append(record)
        store.save(state)
        env = dict(os.environ)
        # A local mesh recovers on shorter timers than the production defaults.
        for key, value in DEV_WORKER_TIMERS.items():
            env.setdefault(key, value)
        env.update(
            {"REGIONMESH_CONFIG": str(mesh_file), "REGIONMESH_REGION": region, "PYTHONUNBUFFERED": "1",
             "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir(root, region))}
            | (extra_env or {}),  # a caller may give a worker its own mesh file (bench.campaign)
        )
        offset = log.stat().st_size if log.exists() else 0
        cmd = [
            sys.executable, "-m", "celery", "-A", "regionmesh.workers.app", "worker",
            "-Q", f"{submit_queue(region)},{steps_queue(region)}",
            "-n", f"{region}-{name}@%h", "-c", str(concurrency), "--loglevel", "INFO",
            "--without-mingle", "--without-gossip",
        ]
        record.pid = spawn(cmd, log, env=env, cwd=env.get("REGIONMESH_WORKER_CWD"))
        store.save(state)
    if wait:
        def ready() -> bool:
            if not pid_alive(record.pid):
                tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
                raise DevMeshError(f"worker {name} for {region} exited:\n{tail}")
            with open(log, "rb") as fh:
                fh.seek(offset)
                return b" ready." in fh.read()

        wait_for(ready, 60, f"worker {name} of {region} to be ready")
    return record


def start_service(store: StateFile, mesh_file: Path, region: str, name: str, command: Callable[[int], list[str]],
                  extra_env: dict[str, str]) -> ProcessState:
    """A region's HTTP side process (``command(port)``) on a free port, recorded before it starts;
    reused if running. Raises DevMeshError when it exits or does not listen within 60 s."""
    with store.locked():
        state = store.load()
        procs = state.region(region).workers
        running = [w for w in procs if w.name == name and pid_alive(w.pid)]
        if running:
            return running[0]
        procs[:] = [w for w in procs if w.name != name]
        port = free_port()
        log = store.path.parent / "logs" / f"{name}-{region}.log"
        record = ProcessState(name=name, log=log, port=port)
        procs.append(record)
        store.save(state)
        env = dict(os.environ, REGIONMESH_CONFIG=str(mesh_file), REGIONMESH_REGION=region)
        env.update(extra_env)
        record.pid = spawn(command(port), log, env=env)
        store.save(state)

    def listening() -> bool:
        if not pid_alive(record.pid):
            raise DevMeshError(f"{name} for {region} exited: {log.read_text(errors='replace')[-1500:]}")
        with socket.socket() as sock:
            return sock.connect_ex((HOST, port)) == 0

    wait_for(listening, 60, f"{name} of {region} on port {port}")
    return record


def stop_worker(store: StateFile, region: str, name: str, *, kill: bool = False) -> None:
    """Stop one worker (warm shutdown: its unacked messages go back at once); ``kill``: SIGKILL
    the main process and its pool."""
    with store.locked():
        state = store.load()
        entry = state.region(region)
        for w in entry.workers:
            if w.name == name and pid_alive(w.pid):
                if kill:
                    kill_tree(w.pid)
                else:
                    terminate(w.pid, timeout=30, group=True)
        entry.workers = [w for w in entry.workers if w.name != name]
        store.save(state)


def stop_all(workers: list[ProcessState], region: str) -> list[str]:
    """Stop every recorded process of a region (each its whole process group). Returns what stopped."""
    stopped = []
    for worker in workers:
        if pid_alive(worker.pid):
            terminate(worker.pid, timeout=20, group=True)
            stopped.append(f"{region} {worker.name}")
    return stopped

"""The local process supervisor: start, probe and stop the dev mesh's servers.

Mechanism only: the dev mesh (``regionmesh.ops.devmesh``) records every process in its state
file *before* it spawns it here (port, data folder, pid file), so a crash halfway through
``dev up`` leaves nothing that ``dev down`` cannot find and stop.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from regionmesh.errors import DevMeshError
from regionmesh.host import pid_alive
from regionmesh.safefs import open_log


def free_port(host: str = "127.0.0.1", avoid: set[int] | None = None) -> int:
    """A port nobody listens on now (the kernel picks it)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if not avoid or port not in avoid:
            return port
    raise DevMeshError("could not find a free TCP port on loopback")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now (like PostgreSQL and Redis, with
    SO_REUSEADDR: connections in TIME_WAIT from a previous run do not block it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def read_pidfile(path: Path) -> int | None:
    try:
        first = path.read_text(encoding="ascii").splitlines()[0].strip()
        return int(first)
    except (OSError, ValueError, IndexError):
        return None


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until true; raises DevMeshError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise DevMeshError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def terminate(pid: int | None, timeout: float = 15.0, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; ``group`` signals the process group."""
    if not pid_alive(pid):
        return
    assert pid is not None
    kill = os.killpg if group else os.kill
    try:
        kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if pid_alive(pid):
        try:
            kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return

        def gone() -> bool:
            _reap(pid)
            return not pid_alive(pid)

        wait_for(gone, 10, f"pid {pid} to exit")


def kill_tree(*pids: int | None, timeout: float = 10.0) -> list[int]:
    """SIGKILL each of ``pids`` and every process below it (a worker and its pool, a postmaster
    and its backends), all before waiting, then wait until none is alive (a zombie counts as
    dead). Returns the pids killed.

    Raises DevMeshError naming a process still alive after ``timeout``.
    """
    procs: list[psutil.Process] = []
    for pid in filter(None, pids):
        try:
            main = psutil.Process(pid)
            procs += [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    killed = []
    for proc in procs:
        try:
            proc.kill()
            killed.append(proc.pid)
        except psutil.NoSuchProcess:
            pass
    for victim in killed:

        def dead(victim: int = victim) -> bool:
            _reap(victim)
            return not pid_alive(victim)

        wait_for(dead, timeout, f"pid {victim} to die")
    return killed


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: str | None = None) -> int:
    """Start a long-running process in its own session, logging to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # Logs may carry connection details: readable by us only, never written through a symlink.
    with os.fdopen(open_log(log), "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    return proc.pid

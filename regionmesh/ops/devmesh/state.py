"""What ``dev up`` started, as typed records over ``state.json`` in the mesh folder.

The file's layout is the one earlier releases wrote, so a mesh made by one is still found,
reused and stopped::

    {"regions": {"<region>": {"pg": {"datadir", "bindir", "run_as", "log", "bootstrapped", "port"},
                              "redis": {"dir", "pidfile", "log", "port", "pid"},
                              "joined": bool,
                              "workers": [{"name", "log", "pid", "env"} | {"name", "log", "pid", "port"}]}},
     "pg_bindir": str, "tls": bool, "pg_root": str, "zones": {"<zone>": ["<region>", ...]}}

Keys an earlier release had not written yet (a crash halfway through ``up``) take their
defaults. A record is saved before the process it names starts, so a crash leaves nothing
``dev down`` cannot find.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regionmesh.errors import DevMeshError


@dataclass
class PgState:
    """A region's PostgreSQL cluster."""

    datadir: Path
    bindir: Path | None
    run_as: str | None  # the server's user (None: the user that ran ``up``)
    log: Path
    port: int | None = None
    bootstrapped: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"datadir": str(self.datadir), "bindir": _opt_str(self.bindir),
                               "run_as": self.run_as, "log": str(self.log), "bootstrapped": self.bootstrapped}
        if self.port is not None:
            out["port"] = self.port
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any], default: PgState) -> PgState:
        return cls(
            datadir=Path(raw.get("datadir") or default.datadir),
            bindir=_opt_path(raw.get("bindir")) or default.bindir,
            run_as=raw.get("run_as", default.run_as),
            log=Path(raw.get("log") or default.log),
            port=_opt_int(raw.get("port")),
            bootstrapped=bool(raw.get("bootstrapped", False)),
        )


@dataclass
class RedisState:
    """A region's Redis (the broker)."""

    dir: Path
    pidfile: Path
    log: Path
    port: int | None = None
    pid: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dir": str(self.dir), "pidfile": str(self.pidfile), "log": str(self.log)}
        if self.port is not None:
            out["port"] = self.port
        out["pid"] = self.pid
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any], default: RedisState) -> RedisState:
        return cls(
            dir=Path(raw.get("dir") or default.dir),
            pidfile=Path(raw.get("pidfile") or default.pidfile),
            log=Path(raw.get("log") or default.log),
            port=_opt_int(raw.get("port")),
            pid=_opt_int(raw.get("pid")),
        )


SERVICES = ("flower", "metrics")  # a region's HTTP side processes; every other process is a celery worker


@dataclass
class ProcessState:
    """A process of a region besides its servers: a celery worker (``env``: what its caller added
    to its environment) or an HTTP side process, Flower or metrics (``port``)."""

    name: str
    log: Path
    pid: int | None = None
    port: int | None = None
    env: dict[str, str] | None = None

    @property
    def is_worker(self) -> bool:
        return self.name not in SERVICES

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "log": str(self.log), "pid": self.pid}
        if self.env is not None:
            out["env"] = dict(self.env)
        if self.port is not None:
            out["port"] = self.port
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ProcessState:
        env = raw.get("env")
        return cls(name=str(raw.get("name", "worker")), log=Path(raw.get("log") or "/nonexistent"),
                   pid=_opt_int(raw.get("pid")), port=_opt_int(raw.get("port")),
                   env=None if env is None else {str(k): str(v) for k, v in env.items()})


@dataclass
class RegionState:
    """One region of the mesh: its servers, its processes, and whether it has joined the mesh."""

    pg: PgState
    redis: RedisState
    workers: list[ProcessState] = field(default_factory=list)  # celery workers, Flower and metrics
    joined: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"pg": self.pg.to_json(), "redis": self.redis.to_json(), "joined": self.joined,
                "workers": [w.to_json() for w in self.workers]}

    @classmethod
    def from_json(cls, raw: dict[str, Any], default: RegionState) -> RegionState:
        return cls(
            pg=PgState.from_json(raw.get("pg") or {}, default.pg),
            redis=RedisState.from_json(raw.get("redis") or {}, default.redis),
            workers=[ProcessState.from_json(w) for w in raw.get("workers") or []],
            joined=bool(raw.get("joined", False)),
        )


@dataclass
class MeshState:
    """The whole mesh: its regions (in the order they were added), where its PostgreSQL binaries
    and data live, whether it runs TLS, and its residency zones."""

    root: Path  # the mesh folder (not recorded: the file lives in it)
    regions: dict[str, RegionState] = field(default_factory=dict)
    pg_bindir: Path | None = None
    tls: bool = False
    pg_root: Path | None = None
    zones: dict[str, list[str]] | None = None

    def new_region(self, name: str) -> RegionState:
        """The record of a region not started yet: where its files go, no port, no pid."""
        pg_root = self.pg_root or self.root / "pg"
        rdir = self.root / "redis" / name
        return RegionState(
            pg=PgState(datadir=pg_root / name, bindir=self.pg_bindir, run_as=None,
                       log=self.root / "logs" / f"pg-{name}.log"),
            redis=RedisState(dir=rdir, pidfile=rdir / "redis.pid", log=self.root / "logs" / f"redis-{name}.log"),
        )

    def region(self, name: str) -> RegionState:
        """Raises DevMeshError when ``up`` never recorded ``name``."""
        try:
            return self.regions[name]
        except KeyError:
            raise DevMeshError(f"region {name} is not part of the mesh in {self.root} "
                               f"(it has {', '.join(self.regions) or 'no regions'}); 'regionmesh dev up' first") from None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"regions": {name: r.to_json() for name, r in self.regions.items()}}
        if self.pg_bindir is not None:
            out["pg_bindir"] = str(self.pg_bindir)
        out["tls"] = self.tls
        if self.pg_root is not None:
            out["pg_root"] = str(self.pg_root)
        if self.zones is not None:
            out["zones"] = {z: list(members) for z, members in self.zones.items()}
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any], root: Path) -> MeshState:
        zones = raw.get("zones")
        state = cls(root=root, pg_bindir=_opt_path(raw.get("pg_bindir")), tls=bool(raw.get("tls", False)),
                    pg_root=_opt_path(raw.get("pg_root")),
                    zones=None if zones is None else {str(z): [str(r) for r in m] for z, m in zones.items()})
        for name, entry in (raw.get("regions") or {}).items():
            state.regions[name] = RegionState.from_json(entry or {}, state.new_region(name))
        return state


class StateFile:
    """``state.json`` in the mesh folder: what was started, written before it starts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> MeshState:
        """The recorded state (an empty mesh when there is no file). Raises DevMeshError when unreadable."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return MeshState(root=self.path.parent)
        except (OSError, json.JSONDecodeError) as exc:
            raise DevMeshError(f"{self.path} is unreadable ({exc}); remove it after stopping its processes") from exc
        if not isinstance(raw, dict):
            raise DevMeshError(f"{self.path} holds no mesh state; remove it after stopping its processes")
        return MeshState.from_json(raw, self.path.parent)

    def save(self, state: MeshState) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=2), encoding="utf-8")
        tmp.replace(self.path)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One ``up``/``down``/worker start at a time per mesh folder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w", encoding="ascii") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _opt_str(value: Path | None) -> str | None:
    return None if value is None else str(value)


def _opt_path(value: Any) -> Path | None:
    return Path(value) if value else None


def _opt_int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)

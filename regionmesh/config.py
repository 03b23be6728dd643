"""The mesh file and the environment, loaded once into one typed object.

The mesh file is TOML::

    [mesh]
    name = "dev"
    replication_user = "rm_replicator"
    replication_password = { env = "REGIONMESH_REPLICATION_PASSWORD" }

    [regions.us-east]
    database_url = "postgresql://regionmesh@db.us-east:5432/regionmesh"
    database_password = { file = "/run/secrets/us-east-db" }
    broker_url = "redis://broker.us-east:6379/0"
    broker_password = { env = "REGIONMESH_US_EAST_BROKER_PASSWORD" }   # optional
    peer_conninfo = "host=db.us-east port=5432 dbname=regionmesh"
    sslmode = "verify-full"                                            # optional

    [zones]                                  # optional: data residency
    eu = ["eu-west", "eu-central"]           # a region belongs to at most one zone

Secrets never live in the file: a ``*_password`` key is a table naming an
environment variable (``env``) or a file (``file``, relative to the mesh file).
A URL that carries a password is refused.

Environment: ``REGIONMESH_CONFIG`` (the mesh file), ``REGIONMESH_REGION`` (the
local region; a dev mesh's file names a ``default_region``), and the tuning
knobs of :class:`Settings`. This module is the only place that reads
``REGIONMESH_*`` variables.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from regionmesh.errors import ConfigError

ENV_CONFIG = "REGIONMESH_CONFIG"
ENV_REGION = "REGIONMESH_REGION"
DEFAULT_CONFIG_PATH = ".regionmesh/mesh.toml"

# Region names end up in queue names, slot names (lowercase, digits, "_",
# at most 63 bytes for "rm_<a>_from_<b>") and metric labels.
REGION_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_SSLMODE = "prefer"  # libpq's own default
DEFAULT_MAX_INPUT_BYTES = 1 << 20

_REGION_KEYS = {
    "database_url",
    "database_password",
    "broker_url",
    "broker_password",
    "peer_conninfo",
    "sslmode",
    "ca_file",
}
_MESH_KEYS = {"name", "replication_user", "replication_password", "max_input_bytes", "default_region",
              "replication_link_secrets"}


@dataclass(frozen=True)
class Setting:
    """One tuning knob: its environment variable, default and what it means (``--help`` and docs/reference/settings.md)."""

    env: str
    default: float | int | str
    help: str


_T = TypeVar("_T", str, int, float)


def _knob(env: str, default: _T, help: str) -> _T:
    """A field of :class:`Settings`: its default, with its variable and meaning as field metadata."""
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class Settings:
    """Tuning knobs, from ``REGIONMESH_*`` environment variables: each field carries its default,
    its variable and its meaning (SETTINGS lists them)."""

    workflows: str = _knob("REGIONMESH_WORKFLOWS", "regionmesh.workers.examples",
                           "comma-separated modules that register workflows")
    reconcile_interval_s: float = _knob("REGIONMESH_RECONCILE_INTERVAL_S", 1.0, "reconciler pass interval")
    requeue_after_s: float = _knob("REGIONMESH_REQUEUE_AFTER_S", 30.0, "re-publish a queued task not started by then")
    deadline_slack_s: float = _knob("REGIONMESH_DEADLINE_SLACK_S", 5.0, "grace past a step's timeout before re-queueing")
    visibility_timeout_s: int = _knob("REGIONMESH_VISIBILITY_TIMEOUT_S", 3600,
                                      "Redis unacked redelivery timeout; longer than any step")
    forward_confirm_s: float = _knob("REGIONMESH_FORWARD_CONFIRM_S", 60.0,
                                     "re-send a forward whose run is not seen by then")
    db_pool_size: int = _knob("REGIONMESH_DB_POOL_SIZE", 4, "connections per region engine per process")
    lease_s: float = _knob("REGIONMESH_LEASE_S", 10.0,
                           "L: how long a majority's acknowledgement of a beat lets a region work")
    clock_drift: float = _knob("REGIONMESH_CLOCK_DRIFT", 0.01, "rho: bound on the clock rate difference between hosts")
    lease_margin_s: float = _knob("REGIONMESH_LEASE_MARGIN_S", 1.0, "added to every grantor's promise")
    fairness: str = _knob("REGIONMESH_FAIRNESS", "off",
                          "on: a region takes queued work tenant by tenant (weights, bands, limits); off: FIFO")
    fair_aging_s: float = _knob("REGIONMESH_FAIR_AGING_S", 10.0,
                                "fair dispatch: a waiting task moves up one priority band per this many seconds")

    @property
    def fair_dispatch(self) -> bool:
        """Whether ``fairness`` asks for fair dispatch (on/true/yes/1)."""
        return self.fairness.strip().lower() in ("on", "true", "yes", "1")

    @property
    def workflow_modules(self) -> list[str]:
        return [n.strip() for n in self.workflows.split(",") if n.strip()]


def _settings_table() -> dict[str, Setting]:
    defaults = Settings()
    return {f.name: Setting(f.metadata["env"], getattr(defaults, f.name), f.metadata["help"]) for f in fields(defaults)}


# Every knob by field name (what settings_from_env reads, --help and the docs list), read off
# Settings' fields so that each default is written once.
SETTINGS: dict[str, Setting] = _settings_table()


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every tuning knob; raises ConfigError naming the variable when one is not a positive number."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, setting in SETTINGS.items():
        raw = env.get(setting.env)
        if raw is None or raw == "":
            continue
        if isinstance(setting.default, str):
            values[name] = raw
            continue
        kind = type(setting.default)
        try:
            value = kind(raw)
        except ValueError:
            value = -1
        if value <= 0:
            raise ConfigError("(environment)", setting.env, f"{raw!r} is not a positive {kind.__name__}",
                              f"set {setting.env} to a positive number ({setting.help}; default {setting.default})")
        values[name] = value
    return Settings(**values)


@dataclass(frozen=True)
class RegionConfig:
    """One region: where its database and broker are, and how peers reach it."""

    name: str
    database_url: str = field(repr=False)
    broker_url: str = field(repr=False)
    peer_conninfo: str
    sslmode: str = DEFAULT_SSLMODE
    ca_file: str | None = None  # the CA that signed this region's PostgreSQL and Redis certificates

    @property
    def redacted_database_url(self) -> str:
        return _redact(self.database_url)

    @property
    def redacted_broker_url(self) -> str:
        return _redact(self.broker_url)


@dataclass(frozen=True)
class MeshConfig:
    """The whole mesh as this process sees it."""

    path: str
    name: str
    regions: Mapping[str, RegionConfig]
    local_region: str | None
    replication_user: str
    replication_password: str | None = field(repr=False)
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    settings: Settings = field(default_factory=Settings)
    # A folder with one secret file per replication link role (only where subscriptions are set up).
    replication_link_dir: str | None = None
    # Data residency: zone name -> its regions (a region is in at most one zone).
    zones: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def zone_of(self, region: str) -> str | None:
        """The zone ``region`` belongs to, or None."""
        return next((z for z, members in self.zones.items() if region in members), None)

    def link_password(self, role: str) -> str | None:
        """The secret of one link role, read when a subscription is set up (None: no link secrets).

        Raises ConfigError when the folder is configured but the file is missing."""
        if self.replication_link_dir is None:
            return None
        return _secret(self.path, "mesh.replication_link_secrets", {"file": str(Path(self.replication_link_dir) / role)},
                       Path(self.path).parent, {})

    @property
    def local(self) -> RegionConfig:
        """The region this process serves; raises ConfigError if none was selected."""
        if self.local_region is None:
            raise ConfigError(
                self.path,
                ENV_REGION,
                "no local region selected",
                f"pass --region, set {ENV_REGION} to one of: {', '.join(self.regions)}, "
                "or add default_region = \"<name>\" under [mesh]",
            )
        return self.regions[self.local_region]

    def peers(self, of: str) -> list[RegionConfig]:
        return [r for name, r in self.regions.items() if name != of]


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _with_password(url: str, password: str | None) -> str:
    if password is None:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    user = quote(parts.username or "", safe="")
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _secret(path: str, key: str, raw: Any, base: Path, environ: Mapping[str, str]) -> str:
    """Resolve ``{env = "VAR"}`` or ``{file = "path"}``; the file key says which."""
    if isinstance(raw, str):
        raise ConfigError(
            path,
            key,
            "a secret is written into the mesh file",
            'replace it with { env = "VARIABLE" } or { file = "/path/to/secret" }',
        )
    if not isinstance(raw, dict) or len(raw) != 1 or not ({"env", "file"} & raw.keys()):
        raise ConfigError(
            path, key, "expected a table with exactly one of 'env' or 'file'",
            f'write {key} = {{ env = "VARIABLE" }}',
        )
    if "env" in raw:
        var = raw["env"]
        if not isinstance(var, str) or not var:
            raise ConfigError(path, f"{key}.env", "must be a variable name", "name the variable")
        value = environ.get(var)
        if value is None or value == "":
            raise ConfigError(
                path, key, f"environment variable {var} is not set",
                f"export {var}=... before starting regionmesh",
            )
        return value
    file_ = raw["file"]
    if not isinstance(file_, str) or not file_:
        raise ConfigError(path, f"{key}.file", "must be a path", "name the secret file")
    secret_path = (base / file_) if not os.path.isabs(file_) else Path(file_)
    try:
        value = secret_path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            path, key, f"cannot read secret file {secret_path}: {exc.strerror}",
            "create the file or point the key at the right one",
        ) from exc
    if not value:
        raise ConfigError(path, key, f"secret file {secret_path} is empty", "write the secret into it")
    return value


def _require_str(path: str, key: str, table: Mapping[str, Any], name: str) -> str:
    if name not in table:
        raise ConfigError(path, f"{key}.{name}", "missing", f"add {name} = \"...\" under [{key}]")
    value = table[name]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, f"{key}.{name}", "must be a non-empty string", f"set {name} = \"...\"")
    return value


def _check_url(path: str, key: str, url: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ConfigError(
            path, key, f"scheme {parts.scheme or '(none)'!r} is not supported",
            f"use a URL starting with {' or '.join(s + '://' for s in schemes)}",
        )
    if not parts.hostname:
        raise ConfigError(path, key, "URL has no host", "write host and port into the URL")
    if parts.password is not None:
        raise ConfigError(
            path, key, "URL carries a password",
            "remove it from the URL and give it as a *_password secret (env or file)",
        )


def _tls_query(broker_url: str, ca_file: str | None) -> str:
    """A ``rediss://`` URL with a ``ca_file`` verifies the server's certificate against it (kombu
    and redis-py both read these query parameters; both require a valid certificate by default)."""
    if not broker_url.startswith("rediss://") or not ca_file:
        return broker_url
    extra = []
    if "ssl_cert_reqs=" not in broker_url:
        extra.append("ssl_cert_reqs=required")
    if ca_file and "ssl_ca_certs=" not in broker_url:
        extra.append(f"ssl_ca_certs={quote(ca_file)}")
    if not extra:
        return broker_url
    return broker_url + ("&" if "?" in broker_url else "?") + "&".join(extra)


def _region(path: str, name: str, raw: Any, base: Path, environ: Mapping[str, str]) -> RegionConfig:
    key = f"regions.{name}"
    if not REGION_NAME_RE.match(name):
        raise ConfigError(
            path, key, "invalid region name",
            "use 1-24 characters: a lowercase letter, then lowercase letters, digits or '-'",
        )
    if not isinstance(raw, dict):
        raise ConfigError(path, key, "must be a table", f"write [{key}] followed by its keys")
    unknown = sorted(set(raw) - _REGION_KEYS)
    if unknown:
        raise ConfigError(
            path, f"{key}.{unknown[0]}", "unknown key", f"known keys: {', '.join(sorted(_REGION_KEYS))}"
        )
    db_url = _require_str(path, key, raw, "database_url")
    _check_url(path, f"{key}.database_url", db_url, ("postgresql", "postgresql+psycopg2"))
    broker_url = _require_str(path, key, raw, "broker_url")
    _check_url(path, f"{key}.broker_url", broker_url, ("redis", "rediss"))
    conninfo = _require_str(path, key, raw, "peer_conninfo")
    if "password" in conninfo:
        raise ConfigError(
            path, f"{key}.peer_conninfo", "conninfo carries a password",
            "remove it; peers use [mesh].replication_password",
        )
    sslmode = raw.get("sslmode", DEFAULT_SSLMODE)
    if sslmode not in SSLMODES:
        raise ConfigError(path, f"{key}.sslmode", f"unknown sslmode {sslmode!r}", f"use one of {', '.join(SSLMODES)}")
    db_password = (
        _secret(path, f"{key}.database_password", raw["database_password"], base, environ)
        if "database_password" in raw
        else None
    )
    broker_password = (
        _secret(path, f"{key}.broker_password", raw["broker_password"], base, environ)
        if "broker_password" in raw
        else None
    )
    if sslmode != DEFAULT_SSLMODE and "sslmode=" not in db_url:
        db_url += ("&" if "?" in db_url else "?") + f"sslmode={sslmode}"
    ca_file = raw.get("ca_file")
    if ca_file is not None:
        if not isinstance(ca_file, str) or not ca_file:
            raise ConfigError(path, f"{key}.ca_file", "must be a path", 'e.g. ca_file = "tls/ca.crt"')
        # Not opened here: the file lives where the clients run (libpq and redis-py name it when missing).
        ca_file = str(base / ca_file) if not os.path.isabs(ca_file) else ca_file
        if "sslrootcert=" not in db_url:
            db_url += ("&" if "?" in db_url else "?") + f"sslrootcert={quote(ca_file)}"
    broker_url = _tls_query(broker_url, ca_file)
    return RegionConfig(
        name=name,
        database_url=_with_password(db_url, db_password),
        broker_url=_with_password(broker_url, broker_password),
        peer_conninfo=conninfo,
        sslmode=sslmode,
        ca_file=ca_file,
    )


def parse_config(
    text: str,
    *,
    path: str = "<string>",
    environ: Mapping[str, str] | None = None,
    region: str | None = None,
) -> MeshConfig:
    """Parse a mesh file's text.

    Raises ConfigError naming the file, the key and the fix.
    """
    env = os.environ if environ is None else environ
    base = Path(path).parent if path != "<string>" else Path.cwd()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "(file)", f"not valid TOML: {exc}", "correct the syntax at that line") from exc
    mesh = raw.get("mesh", {})
    if not isinstance(mesh, dict):
        raise ConfigError(path, "mesh", "must be a table", "write [mesh] followed by its keys")
    unknown = sorted(set(mesh) - _MESH_KEYS)
    if unknown:
        raise ConfigError(path, f"mesh.{unknown[0]}", "unknown key", f"known keys: {', '.join(sorted(_MESH_KEYS))}")
    extra = sorted(set(raw) - {"mesh", "regions", "zones"})
    if extra:
        raise ConfigError(path, extra[0], "unknown section", "only [mesh], [regions.<name>] and [zones] are read")
    regions_raw = raw.get("regions")
    if not isinstance(regions_raw, dict) or not regions_raw:
        raise ConfigError(path, "regions", "no regions defined", "add at least one [regions.<name>] table")
    regions = {name: _region(path, name, body, base, env) for name, body in regions_raw.items()}
    zones = _zones(path, raw.get("zones", {}), regions)
    max_input = mesh.get("max_input_bytes", DEFAULT_MAX_INPUT_BYTES)
    if not isinstance(max_input, int) or isinstance(max_input, bool) or max_input <= 0:
        raise ConfigError(path, "mesh.max_input_bytes", "must be a positive integer", "e.g. max_input_bytes = 1048576")
    repl_user = mesh.get("replication_user", "rm_replicator")
    if not isinstance(repl_user, str) or not re.match(r"^[a-z_][a-z0-9_]{0,62}$", repl_user):
        raise ConfigError(path, "mesh.replication_user", "invalid role name", "use lowercase letters, digits, '_'")
    repl_password = (
        _secret(path, "mesh.replication_password", mesh["replication_password"], base, env)
        if "replication_password" in mesh
        else None
    )
    link_dir = mesh.get("replication_link_secrets")
    if link_dir is not None:
        if not isinstance(link_dir, str) or not link_dir:
            raise ConfigError(path, "mesh.replication_link_secrets", "must be a folder path",
                              'e.g. replication_link_secrets = "secrets/links"')
        link_dir = link_dir if os.path.isabs(link_dir) else str(base / link_dir)
    default_region = mesh.get("default_region")
    if default_region is not None and default_region not in regions:
        raise ConfigError(path, "mesh.default_region", f"region {default_region!r} is not in the mesh file",
                          f"use one of: {', '.join(regions)}")
    local = region if region is not None else env.get(ENV_REGION) or default_region or None
    if local is not None and local not in regions:
        raise ConfigError(
            path, ENV_REGION, f"region {local!r} is not in the mesh file",
            f"set {ENV_REGION} to one of: {', '.join(regions)}",
        )
    name = mesh.get("name", "regionmesh")
    if not isinstance(name, str):
        raise ConfigError(path, "mesh.name", "must be a string", 'e.g. name = "prod"')
    return MeshConfig(
        path=path,
        name=name,
        regions=regions,
        local_region=local,
        replication_user=repl_user,
        replication_password=repl_password,
        max_input_bytes=max_input,
        settings=settings_from_env(env),
        replication_link_dir=link_dir,
        zones=zones,
    )


def _zones(path: str, raw: Any, regions: Mapping[str, RegionConfig]) -> dict[str, tuple[str, ...]]:
    """``[zones]``: name -> a non-empty list of the mesh's regions; a region in at most one zone."""
    if not isinstance(raw, dict):
        raise ConfigError(path, "zones", "must be a table", 'e.g. [zones] then eu = ["eu-west", "eu-central"]')
    zones: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for name, members in raw.items():
        key = f"zones.{name}"
        if not REGION_NAME_RE.match(name):
            raise ConfigError(path, key, "invalid zone name", "a lowercase letter, then lowercase letters, digits or '-'")
        if (not isinstance(members, list) or not members
                or not all(isinstance(m, str) for m in members) or len(set(members)) != len(members)):
            raise ConfigError(path, key, "must be a non-empty list of distinct region names",
                              f'e.g. {name} = ["eu-west", "eu-central"]')
        for member in members:
            if member not in regions:
                raise ConfigError(path, key, f"region {member!r} is not in the mesh file",
                                  f"use regions of the mesh: {', '.join(regions)}")
            if member in seen:
                raise ConfigError(path, key, f"region {member!r} is already in zone {seen[member]!r}",
                                  "a region belongs to at most one zone")
            seen[member] = name
        zones[name] = tuple(members)
    return zones


def database_url_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``REGIONMESH_DATABASE_URL``: the one database plain ``alembic`` commands run against."""
    env = os.environ if environ is None else environ
    return env.get("REGIONMESH_DATABASE_URL") or None


# The machine's side of a dev mesh: where PostgreSQL's binaries are, which user runs the servers
# when we are root, Flower's login. Read here like every other variable; pgbin and devmesh ask.
ENV_PG_BIN = "REGIONMESH_PG_BIN"
ENV_PG_USER = "REGIONMESH_PG_USER"
ENV_FLOWER_AUTH = "REGIONMESH_FLOWER_AUTH"


def pg_bin_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``REGIONMESH_PG_BIN``: a PostgreSQL >= 16 bin folder to use instead of the embedded one."""
    env = os.environ if environ is None else environ
    return env.get(ENV_PG_BIN) or None


def pg_user_from_env(environ: Mapping[str, str] | None = None) -> str:
    """``REGIONMESH_PG_USER``: the unprivileged user that runs the servers when we are root."""
    env = os.environ if environ is None else environ
    return env.get(ENV_PG_USER) or "postgres"


def flower_auth_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``REGIONMESH_FLOWER_AUTH``: Flower's basic auth as ``user:password`` (else a generated one)."""
    env = os.environ if environ is None else environ
    return env.get(ENV_FLOWER_AUTH) or None


# The operator console's logins (``regionmesh console``), the same model as Flower's basic auth.
ENV_CONSOLE_AUTH = "REGIONMESH_CONSOLE_AUTH"
ENV_CONSOLE_OPERATOR_AUTH = "REGIONMESH_CONSOLE_OPERATOR_AUTH"


def console_auth_from_env(environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(``REGIONMESH_CONSOLE_AUTH``, ``REGIONMESH_CONSOLE_OPERATOR_AUTH``): the console's viewer and
    operator logins as ``user:password`` (the operator may also cancel and retry runs)."""
    env = os.environ if environ is None else environ
    return env.get(ENV_CONSOLE_AUTH) or None, env.get(ENV_CONSOLE_OPERATOR_AUTH) or None


def config_path(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return explicit or env.get(ENV_CONFIG) or DEFAULT_CONFIG_PATH


def load_config(
    path: str | None = None,
    *,
    region: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> MeshConfig:
    """Load the mesh file (``path``, else ``$REGIONMESH_CONFIG``, else the dev mesh's).

    Raises ConfigError when the file is missing, malformed or names an absent secret.
    """
    resolved = config_path(path, environ)
    try:
        text = Path(resolved).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            resolved, "(file)", "mesh file not found",
            f"pass --config, set {ENV_CONFIG}, or run 'regionmesh dev up' to create a local mesh",
        ) from exc
    except OSError as exc:
        raise ConfigError(resolved, "(file)", f"cannot read: {exc.strerror}", "check the path and permissions") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(resolved, "(file)", "not UTF-8 text", "save the file as UTF-8") from exc
    return parse_config(text, path=resolved, environ=environ, region=region)

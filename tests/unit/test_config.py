"""Mesh file parsing: the good file, and every bad input with the error it must give."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from regionmesh.config import SETTINGS, Settings, load_config, parse_config, settings_from_env
from regionmesh.errors import ConfigError
from regionmesh.ops.cli import main

GOOD = """
[mesh]
name = "prod"
replication_user = "rm_replicator"
replication_password = { env = "RM_REPL_PW" }

[regions.us-east]
database_url = "postgresql://regionmesh@db.us-east:5432/regionmesh"
database_password = { env = "RM_DB_PW" }
broker_url = "redis://broker.us-east:6379/0"
peer_conninfo = "host=db.us-east port=5432 dbname=regionmesh"
sslmode = "verify-full"

[regions.eu-west]
database_url = "postgresql://regionmesh@db.eu-west:5432/regionmesh"
database_password = { file = "eu-west-db" }
broker_url = "rediss://broker.eu-west:6380/0"
broker_password = { env = "RM_BROKER_PW" }
peer_conninfo = "host=db.eu-west port=5432 dbname=regionmesh"
"""
ENV = {"RM_REPL_PW": "repl secret", "RM_DB_PW": "p@ss:word/1", "RM_BROKER_PW": "b"}


def _write(tmp_path: Path, text: str) -> str:
    (tmp_path / "eu-west-db").write_text("file-secret\n")
    path = tmp_path / "mesh.toml"
    path.write_text(text)
    return str(path)


def test_good_file_parses_with_secrets_resolved(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD), environ=ENV | {"REGIONMESH_REGION": "eu-west"})
    assert list(cfg.regions) == ["us-east", "eu-west"]
    assert cfg.local.name == "eu-west"
    assert cfg.replication_password == "repl secret"
    us = cfg.regions["us-east"]
    # Password is URL-quoted into the URL; sslmode is carried to libpq.
    assert us.database_url == "postgresql://regionmesh:p%40ss%3Aword%2F1@db.us-east:5432/regionmesh?sslmode=verify-full"
    assert "p%40ss" not in us.redacted_database_url and ":***@" in us.redacted_database_url
    assert cfg.regions["eu-west"].database_url.startswith("postgresql://regionmesh:file-secret@")
    assert cfg.regions["eu-west"].broker_url == "rediss://:b@broker.eu-west:6380/0"
    assert [p.name for p in cfg.peers("eu-west")] == ["us-east"]
    assert "secret" not in repr(cfg)


def _replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


BAD_CASES = [
    ("not toml [", "(file)", "not valid TOML"),
    ("[mesh]\nname='x'\n", "regions", "no regions defined"),
    (_replace('database_password = { env = "RM_DB_PW" }', 'database_password = "hunter2"'),
     "regions.us-east.database_password", "secret is written into the mesh file"),
    (_replace("RM_DB_PW", "RM_MISSING"), "regions.us-east.database_password", "RM_MISSING is not set"),
    (_replace('{ file = "eu-west-db" }', '{ file = "nope" }'), "regions.eu-west.database_password", "cannot read secret file"),
    (_replace("[regions.us-east]", "[regions.US_East]"), "regions.US_East", "invalid region name"),
    (_replace('sslmode = "verify-full"', 'sslmode = "sometimes"'), "regions.us-east.sslmode", "unknown sslmode"),
    (_replace("redis://broker.us-east", "amqp://broker.us-east"), "regions.us-east.broker_url", "scheme 'amqp'"),
    (_replace("postgresql://regionmesh@db.us-east", "postgresql://regionmesh:pw@db.us-east"),
     "regions.us-east.database_url", "URL carries a password"),
    (_replace('peer_conninfo = "host=db.us-east port=5432 dbname=regionmesh"', ""), "regions.us-east.peer_conninfo", "missing"),
    (_replace("dbname=regionmesh\"\nsslmode", "dbname=regionmesh password=x\"\nsslmode"),
     "regions.us-east.peer_conninfo", "conninfo carries a password"),
    (_replace('sslmode = "verify-full"', 'colour = "red"'), "regions.us-east.colour", "unknown key"),
    (_replace('name = "prod"', "name = 3"), "mesh.name", "must be a string"),
    (_replace('name = "prod"', 'name = "prod"\nmax_input_bytes = -1'), "mesh.max_input_bytes", "positive integer"),
    (_replace('{ env = "RM_REPL_PW" }', '{ env = "A", file = "b" }'), "mesh.replication_password", "exactly one"),
    (GOOD + "\n[extras]\nx = 1\n", "extras", "unknown section"),
]


@pytest.mark.parametrize(("text", "key", "problem"), BAD_CASES)
def test_bad_input_names_file_key_and_fix(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=ENV)
    err = info.value
    assert err.key == key
    assert problem in err.problem
    assert err.path == path and path in str(err)
    assert "Fix:" in str(err) and err.fix
    assert err.exit_code == 2


def test_unknown_region_selected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, GOOD), environ=ENV | {"REGIONMESH_REGION": "mars"})
    assert info.value.key == "REGIONMESH_REGION"
    assert "us-east, eu-west" in info.value.fix


def test_no_local_region_is_an_error_only_when_asked(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD), environ=ENV)
    assert cfg.local_region is None
    with pytest.raises(ConfigError, match="REGIONMESH_REGION"):
        _ = cfg.local


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "absent.toml"), environ={})
    assert info.value.problem == "mesh file not found"
    assert "dev up" in info.value.fix


def test_env_variable_selects_file(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    cfg = load_config(environ=ENV | {"REGIONMESH_CONFIG": path})
    assert cfg.path == path


def test_parse_without_file_uses_given_environment() -> None:
    cfg = parse_config(GOOD.replace('{ file = "eu-west-db" }', '{ env = "RM_DB_PW" }'), environ=ENV, region="us-east")
    assert cfg.local_region == "us-east"


def test_cli_exits_2_with_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, _replace("RM_DB_PW", "RM_MISSING"))
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as info:
        main(["--config", path, "migrate", "--check"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "RM_MISSING is not set" in err and "regions.us-east.database_password" in err


def test_default_region_is_the_local_one_unless_another_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace('replication_user = "rm_replicator"',
                                         'replication_user = "rm_replicator"\ndefault_region = "eu-west"'))
    assert load_config(path, environ=ENV).local.name == "eu-west"  # no export needed (a dev mesh's file)
    assert load_config(path, environ=ENV | {"REGIONMESH_REGION": "us-east"}).local.name == "us-east"
    assert load_config(path, region="us-east", environ=ENV | {"REGIONMESH_REGION": "eu-west"}).local.name == "us-east"
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, GOOD.replace('name = "prod"', 'name = "prod"\ndefault_region = "mars"')), environ=ENV)
    assert info.value.key == "mesh.default_region"


def test_no_local_region_error_names_every_fix(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD), environ=ENV)
    with pytest.raises(ConfigError) as info:
        _ = cfg.local
    text = f"{info.value.problem} {info.value.fix}"
    assert "--region" in text and "REGIONMESH_REGION" in text and "default_region" in text


def test_settings_table_and_fields_are_one_source() -> None:
    """SETTINGS (what the environment is read by, --help and the docs) lists exactly Settings'
    fields, each with the field's own default and a REGIONMESH_ variable named after it."""
    assert list(SETTINGS) == [f.name for f in fields(Settings)]
    defaults = Settings()
    for name, setting in SETTINGS.items():
        assert getattr(defaults, name) == setting.default
        assert type(getattr(defaults, name)) is type(setting.default)
        assert setting.env == "REGIONMESH_" + name.upper()
        assert setting.help
    assert settings_from_env({}) == defaults


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_setting_is_read_from_its_variable(name: str) -> None:
    setting = SETTINGS[name]
    raw = "a.b,c.d" if isinstance(setting.default, str) else "7"
    value = getattr(settings_from_env({setting.env: raw}), name)
    assert value == (raw if isinstance(setting.default, str) else type(setting.default)(7))
    assert type(value) is type(setting.default)
    if not isinstance(setting.default, str):
        with pytest.raises(ConfigError) as info:
            settings_from_env({setting.env: "0"})
        assert info.value.key == setting.env and str(setting.default) in info.value.fix

"""Files the dev mesh creates are its own: shared temp folders are verified (owner, mode, not a
symlink) or made fresh, ownership changes never follow symlinks, secrets are born 0600, and the
servers' logs are readable by their owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from regionmesh import pgbin
from regionmesh.errors import DevMeshError
from regionmesh.ops.devmesh import pg as devmesh_pg
from regionmesh.safefs import chown_nofollow, create_private_file, ensure_dir, uid_of, verify_dir
from tests.conftest import Mesh

NOBODY = uid_of("nobody")


def test_a_folder_someone_else_owns_or_links_is_refused(tmp_path: Path) -> None:
    mine = ensure_dir(tmp_path / "mine", owner=os.geteuid(), mode=0o755)
    verify_dir(mine, owner=os.geteuid())
    planted = tmp_path / "planted"
    planted.mkdir()
    os.chown(planted, NOBODY, -1)
    with pytest.raises(DevMeshError, match="owned by uid"):
        ensure_dir(planted, owner=os.geteuid())
    link = tmp_path / "link"
    link.symlink_to(mine)
    with pytest.raises(DevMeshError, match="symlink"):
        ensure_dir(link, owner=os.geteuid())
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    with pytest.raises(DevMeshError, match="others may write"):
        verify_dir(loose, owner=os.geteuid())


def test_secrets_are_born_private_and_never_written_through_a_link(tmp_path: Path) -> None:
    old = os.umask(0)  # the mode must not depend on the caller's umask
    try:
        create_private_file(tmp_path / "secret", b"s3cret")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(tmp_path / "secret").st_mode) == 0o600
    target = tmp_path / "victim"
    target.write_text("untouched")
    (tmp_path / "trap").symlink_to(target)
    with pytest.raises(FileExistsError):
        create_private_file(tmp_path / "trap", b"s3cret")
    assert target.read_text() == "untouched"


def test_chown_never_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "etc-shadow"
    target.write_text("x")
    (tmp_path / "pg").symlink_to(target)
    with pytest.raises(DevMeshError, match="symlink"):
        chown_nofollow(tmp_path / "pg", "nobody")
    assert os.lstat(target).st_uid == os.geteuid()


def _fake_install(tmp_path: Path) -> Path:
    bindir = tmp_path / "site" / "pkg" / "pginstall" / "bin"
    bindir.mkdir(parents=True)
    for name in ("postgres", "pg_ctl", "initdb"):
        (bindir / name).write_text("#!/bin/sh\n")
        os.chmod(bindir / name, 0o755)
    return bindir


def test_the_shared_binary_cache_is_used_only_when_it_is_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = _fake_install(tmp_path)
    cache = tmp_path / "regionmesh-pg"
    monkeypatch.setattr(pgbin, "SHARED_CACHE", cache)
    copied = pgbin._shared_copy(bindir, 16)
    assert (copied / "postgres").exists() and copied.is_relative_to(cache)
    for dirpath, dirnames, filenames in os.walk(cache):
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            assert st.st_uid == os.geteuid() and not st.st_mode & 0o022
    # Reused as it is ...
    assert pgbin._shared_copy(bindir, 16) == copied
    # ... but not once someone else could have written into it.
    planted = copied / "postgres"
    os.chown(planted, NOBODY, -1)
    with pytest.raises(DevMeshError, match="not owned by uid"):
        pgbin._shared_copy(bindir, 16)
    # A cache folder made by another user first is refused outright.
    other = tmp_path / "other-cache"
    other.mkdir()
    os.chown(other, NOBODY, -1)
    monkeypatch.setattr(pgbin, "SHARED_CACHE", other)
    with pytest.raises(DevMeshError, match="owned by uid"):
        pgbin._shared_copy(bindir, 16)


def test_a_data_root_under_a_shared_folder_is_fresh_and_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mesh folder unreachable by the server user: the clusters go to a new, randomly named
    folder under the shared data folder, and a recorded one is checked again on every use."""
    shared = tmp_path / "regionmesh-data"
    monkeypatch.setattr(devmesh_pg, "SHARED_DATA", shared)
    monkeypatch.setattr(devmesh_pg, "reachable_by", lambda user, path, write=False: False)
    pg = pgbin.PgBin(bindir=tmp_path, major=16, run_as="postgres")
    mesh = tmp_path / "mesh"
    first = devmesh_pg.pg_root(mesh, pg, None)
    second = devmesh_pg.pg_root(mesh, pg, None)
    assert first != second and first.parent.parent == second.parent.parent == shared
    st = os.lstat(first)
    assert st.st_uid == uid_of("postgres") and stat.S_IMODE(st.st_mode) == 0o700
    assert devmesh_pg.pg_root(mesh, pg, first) == first
    # Swapped for a symlink to somewhere else: refused.
    elsewhere = ensure_dir(tmp_path / "elsewhere", owner=uid_of("postgres"), mode=0o700)
    os.rmdir(first)
    first.symlink_to(elsewhere)
    with pytest.raises(DevMeshError, match="symlink"):
        devmesh_pg.pg_root(mesh, pg, first)


def test_the_tls_mesh_files_are_private(tls_mesh: Mesh) -> None:
    root = tls_mesh.dev.root
    logs = list((root / "logs").iterdir())
    assert {p.name for p in logs} >= {f"{kind}-{r}.log" for kind in ("pg", "redis") for r in tls_mesh.config.regions}
    for log in logs:
        st = os.lstat(log)
        assert stat.S_ISREG(st.st_mode) and not st.st_mode & 0o037, f"{log} is {stat.S_IMODE(st.st_mode):o}"
    secrets = [p for p in (root / "secrets").rglob("*")]
    assert len([p for p in secrets if p.is_file()]) == 5 + 3 + 6  # the mesh's own, Redis users, one per link
    for path in [root / "secrets", *secrets, root / "tls", root / "tls" / "ca.key"]:
        st = os.lstat(path)
        assert not st.st_mode & 0o077 and st.st_uid == os.geteuid(), f"{path} is {stat.S_IMODE(st.st_mode):o}"
    run_as = tls_mesh.dev.region("us-east").pg.run_as
    for region in tls_mesh.config.regions:
        datadir = tls_mesh.dev.region(region).pg.datadir
        key = os.lstat(datadir / "server.key")
        assert stat.S_IMODE(key.st_mode) == 0o600 and key.st_uid == uid_of(run_as)
        assert stat.S_IMODE(os.lstat(root / "redis" / region / "redis.key").st_mode) == 0o600
        assert not list(tls_mesh.dev.pg_root.glob(".pw-*"))  # initdb's password file is gone

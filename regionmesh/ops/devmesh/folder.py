"""The mesh folder's private parts: generated secrets, the throwaway CA, files written whole.

Names the mesh's roles, databases and secrets once; the other dev mesh modules import them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from regionmesh.safefs import create_private_file, ensure_dir
from regionmesh.tls import CertPair, copy_public, make_ca

DEFAULT_REGIONS = ("us-east", "eu-west", "ap-south")
DATABASE = "regionmesh"
APP_ROLE = "regionmesh"
REPLICATION_ROLE = "rm_replicator"
SECRET_NAMES = ("postgres", APP_ROLE, REPLICATION_ROLE, "redis", "flower")
# A TLS mesh's Redis ACL users: rm-admin (password secrets/redis), rm-worker, rm-producer, rm-flower.
REDIS_USER_PREFIX = "rm-"
REDIS_ROLE_SECRETS = ("redis-worker", "redis-producer", "redis-flower")
HOST = "127.0.0.1"


class MeshFolder:
    """Secrets (``secrets/``, mode 0600, made on first use) and the CA (``tls/``) of one mesh folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def secret(self, name: str) -> str:
        """The secret ``name`` (``links/<role>`` for a link's), generated on first use."""
        path = self.root / "secrets" / name
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            ensure_dir(self.root / "secrets", owner=os.geteuid(), mode=0o700)
            ensure_dir(path.parent, owner=os.geteuid(), mode=0o700)
            create_private_file(path, secrets.token_urlsafe(24).encode("ascii"))
        return path.read_text(encoding="ascii").strip()

    def ca(self) -> CertPair:
        """The mesh's throwaway CA (``tls/ca.crt``, key in the same root-only folder)."""
        folder = self.root / "tls"
        ensure_dir(folder, owner=os.geteuid(), mode=0o700)
        pair = CertPair(folder / "ca.crt", folder / "ca.key")
        if not pair.cert.exists():
            pair.key.unlink(missing_ok=True)
            make_ca(folder)
        return pair

    def ca_file(self) -> Path:
        """The CA clients verify against (a world-readable copy of ``tls/ca.crt``)."""
        public = self.root / "ca.crt"
        if not public.exists():
            copy_public(self.ca().cert, public)
        return public


def replace_file(path: Path, content: str, owner: str | None) -> None:
    """Write ``path`` whole: a fresh private file moved over the old one (never through a symlink)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    create_private_file(tmp, content.encode("utf-8"), owner=owner)
    os.replace(tmp, path)

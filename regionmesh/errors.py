"""One root for every error regionmesh raises on purpose.

Each class names one condition, carries the offending ids as attributes and
has a message an operator can act on.
"""

from __future__ import annotations


class RegionmeshError(Exception):
    """Root of all regionmesh errors. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(RegionmeshError):
    """The mesh file or the environment is wrong; nothing was started."""

    exit_code = 2

    def __init__(self, path: str, key: str, problem: str, fix: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {key}: {problem}. Fix: {fix}")


class DevMeshError(RegionmeshError):
    """The local development mesh could not be started, stopped or inspected."""


class MigrationError(RegionmeshError):
    """Regions are at schema revisions that cannot replicate to each other."""

    def __init__(self, message: str, revisions: dict[str, str | None] | None = None) -> None:
        self.revisions = dict(revisions or {})
        super().__init__(message)

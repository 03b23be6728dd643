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


class MissingExtra(RegionmeshError):
    """A command needs packages of an optional extra that is not installed."""

    exit_code = 2

    def __init__(self, extra: str, missing: list[str], what: str) -> None:
        self.extra = extra
        self.missing = missing
        super().__init__(
            f"{what} needs the '{extra}' extra (missing: {', '.join(missing)}). "
            f"Install it with: pip install 'regionmesh[{extra}]'"
        )


class DevMeshError(RegionmeshError):
    """The local development mesh could not be started, stopped or inspected."""


class MigrationError(RegionmeshError):
    """Regions are at schema revisions that cannot replicate to each other."""

    def __init__(self, message: str, revisions: dict[str, str | None] | None = None) -> None:
        self.revisions = dict(revisions or {})
        super().__init__(message)


class InvalidWorkflow(RegionmeshError):
    """A workflow's DAG is malformed (cycle, unknown dependency or handler, duplicate step)."""

    def __init__(self, workflow: str, problem: str) -> None:
        self.workflow = workflow
        self.problem = problem
        super().__init__(f"workflow {workflow!r} is invalid: {problem}")


class UnknownWorkflow(RegionmeshError):
    """A submission names a workflow this region does not know."""

    def __init__(self, workflow: str, known: list[str]) -> None:
        self.workflow = workflow
        super().__init__(f"unknown workflow {workflow!r}; known: {', '.join(known) or '(none)'}")


class RejectedSubmission(RegionmeshError):
    """A submission is malformed; it is recorded in dead_letters and never retried."""

    def __init__(self, reason: str, *, submission_id: str | None = None, tenant_id: str | None = None) -> None:
        self.reason = reason
        self.submission_id = submission_id
        self.tenant_id = tenant_id
        super().__init__(reason)


class RunNotFound(RegionmeshError):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} not found in this region (replication may still be catching up)")


class InvalidTransition(RegionmeshError):
    """A lifecycle command does not apply to the run's current status."""

    def __init__(self, run_id: str, status: str, action: str) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(f"cannot {action} run {run_id}: it is {status}")


class InvalidSchedule(RegionmeshError):
    """A schedule's definition is wrong (cron, interval, time zone, policy, jitter); nothing was written."""

    exit_code = 2


class ScheduleNotFound(RegionmeshError):
    """No live schedule of that name for that tenant in this region's copy."""

    def __init__(self, tenant_id: str, name: str) -> None:
        self.tenant_id = tenant_id
        self.name = name
        super().__init__(f"tenant {tenant_id!r} has no schedule {name!r} here "
                         f"(list them with 'regionmesh schedules list {tenant_id}')")

"""When the zone scrub scans dead letters: in the passes of the grace after the bindings changed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from regionmesh.workers.runtime import Runtime
from regionmesh.workers.zone_scrub import LETTERS_GRACE_S, ZoneScrubJob


def test_dead_letters_are_scanned_only_while_the_bindings_changed_recently() -> None:
    now = [100.0]
    job = ZoneScrubJob(cast(Runtime, None), clock=lambda: now[0])
    assert job.letters_due((0, None))  # the first pass (a worker's start) scans
    now[0] += LETTERS_GRACE_S
    assert job.letters_due((0, None))  # still within the grace
    now[0] += 0.5
    assert not job.letters_due((0, None))  # nothing changed since: the table is not read
    assert job.letters_due((1, "2026-12-07 10:00:00+00"))  # a binding arrived: scanned at once
    now[0] += LETTERS_GRACE_S / 2
    assert job.letters_due((1, "2026-12-07 10:00:00+00"))  # a refusal in flight then is caught
    now[0] += LETTERS_GRACE_S
    assert not job.letters_due((1, "2026-12-07 10:00:00+00"))
    assert job.letters_due((1, "2026-12-07 10:05:00+00"))  # a binding changed (same count)


def test_a_failed_pass_scans_dead_letters_again_however_long_the_failures_lasted() -> None:
    now = [100.0]
    job = ZoneScrubJob(cast(Runtime, SimpleNamespace(region="us-east", engine=None)), clock=lambda: now[0])
    assert job.letters_due((1, "t"))
    now[0] += 10 * LETTERS_GRACE_S
    job()  # no engine: the pass fails, as with the database away
    assert job.letters_due((1, "t"))

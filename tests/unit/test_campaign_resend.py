"""The campaign's switch for producer re-sends (``--no-resend``): with it no producer publishes a
submission again, so a lost first publish stays lost and is reported by its submission id."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench.campaign import producers
from bench.campaign.__main__ import build_parser
from bench.campaign.producers import Producers
from bench.campaign.record import Plan, Record
from bench.campaign.run import resender_thread


def _producers(tmp_path: Path, resend: bool, stop: threading.Event) -> Producers:
    mesh = SimpleNamespace(root=tmp_path, config=None, regions=["us-east", "eu-west", "ap-south"],
                           alive=lambda: ["us-east", "eu-west", "ap-south"])
    return Producers(Plan.of(7, 1, 3, resend=resend), mesh, Record(lambda _: None), stop)  # type: ignore[arg-type]


@pytest.mark.parametrize("resend", [True, False])
def test_client_producers_confirm_their_journals_only_with_resends_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resend: bool) -> None:
    stop = threading.Event()
    confirms: list[Any] = []
    submits: list[str] = []

    def submit(tenant: str, *a: Any, **kw: Any) -> str:
        submits.append(kw["submission_id"])
        if len(submits) >= 3:
            stop.set()
        return "ok"

    monkeypatch.setattr(producers, "submit", submit)
    def confirm(journal: Any, *a: Any, **kw: Any) -> SimpleNamespace:
        confirms.append(journal)
        return SimpleNamespace(resent=0, resent_as=[])

    monkeypatch.setattr(producers, "confirm", confirm)
    monkeypatch.setattr(producers, "CONFIRM_EVERY_S", 0.0)  # confirm after every publish
    p = _producers(tmp_path, resend, stop)
    monkeypatch.setattr(p, "_home", lambda tenant, rng: "us-east")
    p.client("direct", random.Random(1))
    p.confirm_journals()  # what the drain calls every 10 s
    assert len(submits) == 3 and len(p.record.sent) == 3
    if resend:
        assert len(confirms) == 3 + len(producers.CLIENT_PATHS)
    else:
        assert confirms == []


def test_no_resender_runs_with_resends_off(tmp_path: Path) -> None:
    stop = threading.Event()
    on = _producers(tmp_path, True, stop)
    off = _producers(tmp_path, False, stop)
    assert resender_thread(on.plan, on.mesh, on.record) is not None
    assert resender_thread(off.plan, off.mesh, off.record) is None


def test_the_cli_switch_defaults_to_resends_on() -> None:
    assert build_parser().parse_args(["--seed", "7"]).resend is True
    assert build_parser().parse_args(["--seed", "7", "--no-resend"]).resend is False

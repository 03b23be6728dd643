"""Long runs use a fixed snapshot of the repository; a snapshot that loads half its code from the
working tree (the editable install's mapping of regionmesh.workers and the rest) is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import common


def test_the_tree_the_tests_run_from_is_one_build() -> None:
    common.check_code_root()


def test_a_run_whose_subpackages_load_from_elsewhere_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(common, "ROOT", tmp_path)
    with pytest.raises(RuntimeError, match="bench.snapshot"):
        common.check_code_root()

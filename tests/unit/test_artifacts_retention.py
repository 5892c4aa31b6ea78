"""Failure evidence past its retention is deleted by the controller's sweeper; newer stays."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from controller.routes.artifacts import sweep

pytestmark = pytest.mark.unit


def kept(root: Path, job: str, age_h: float) -> Path:
    folder = root / job / "1"
    folder.mkdir(parents=True)
    when = time.time() - age_h * 3600
    for name in ("screenshot.png", "dom.html"):
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (when, when))
    for path in (folder, folder.parent):
        os.utime(path, (when, when))
    return folder.parent


def test_only_evidence_past_retention_goes(tmp_path: Path) -> None:
    old = kept(tmp_path, "old-job", 30)
    new = kept(tmp_path, "new-job", 1)
    assert sweep(tmp_path, 24) == ["old-job"]
    assert not old.exists() and (new / "1" / "screenshot.png").is_file()


def test_a_later_attempt_keeps_the_whole_job(tmp_path: Path) -> None:
    job = kept(tmp_path, "retried", 30)
    (job / "2").mkdir()
    (job / "2" / "state.json").write_text("{}")  # written now
    assert sweep(tmp_path, 24) == []
    assert (job / "1" / "dom.html").is_file()


def test_zero_keeps_everything_and_odd_names_are_left(tmp_path: Path) -> None:
    kept(tmp_path, "ancient", 10_000)
    stray = tmp_path / "not a job"
    stray.mkdir()
    os.utime(stray, (0, 0))
    assert sweep(tmp_path, 0) == []
    assert sweep(tmp_path, 1) == ["ancient"]
    assert stray.is_dir()
    assert sweep(tmp_path / "missing", 1) == []

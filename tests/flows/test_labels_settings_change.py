"""Labels and rejects carry the digest of the settings that made them: a corrected run relabels, a changed one says so."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from core.tables import Workdir

pytestmark = pytest.mark.integration


def _labels(sample_root, work, *sets: str, extra: tuple[str, ...] = ()) -> tuple[int, str, dict | None]:
    from flows.cli import app

    args = ["labels", "--data-root", str(sample_root), "--split", "train", "--workdir", str(work), "--dataset", "sample",
            "--set", "labels.embeddings=false", *extra]
    for s in sets:
        args += ["--set", s]
    out = CliRunner().invoke(app, args)
    summary = json.loads(out.stdout.strip().splitlines()[-1]) if out.exit_code == 0 else None
    return out.exit_code, out.output, summary


def test_rejects_from_a_mistaken_setting_are_retried_once_it_is_corrected(sample_root, tmp_path, orchestration_ready):
    work = tmp_path / "w"
    code, _, wrong = _labels(sample_root, work, "labels.frames.count=40")  # the videos have 16 frames
    assert code == 0 and wrong["rejects"] == 6 and wrong["rows"] == 0
    assert all("needs 40" in r for r in Workdir(work).read("rejects")["reason"])

    code, _, fixed = _labels(sample_root, work)  # the corrected run must not skip them as rejected
    assert code == 0 and fixed["retried"] == 6 and fixed["rejects"] == 0
    wd = Workdir(work)
    assert wd.read("labels")["video_id"].nunique() == 6 and wd.read("rejects").empty


def test_labels_made_with_other_settings_are_refused_until_relabel(sample_root, tmp_path, orchestration_ready):
    work = tmp_path / "w"
    assert _labels(sample_root, work)[0] == 0
    before = Workdir(work).read("labels")

    code, output, _ = _labels(sample_root, work, "labels.resolution=[128,128]")
    assert code == 2
    assert "labelled with other labels settings" in output and "resolution 256x256 vs 128x128" in output and "--relabel" in output
    code, output, _ = _labels(sample_root, work, "labels.trajectory_source=tracker")
    assert code == 2 and "trajectory source mask-center vs tracker:lk" in output
    assert Workdir(work).read("labels").equals(before)  # nothing was touched

    code, _, relabelled = _labels(sample_root, work, "labels.resolution=[128,128]", extra=("--relabel",))
    assert code == 0 and relabelled["retried"] == 6
    after = Workdir(work).read("labels")
    assert set(zip(after["height"], after["width"])) == {(128, 128)}
    assert len(after) == len(before) and not after.duplicated(["dataset", "split", "video_id", "entity_id"]).any()
    assert _labels(sample_root, work, "labels.resolution=[128,128]")[2]["skipped"] == 6

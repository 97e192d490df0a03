"""The bad-input sweep past labels, through the real CLI (Prefect + Ray): inputs that used to stop generate,
evaluate or the embeddings step on every run now become reject rows, and the rest of the run goes on.

- a 245-byte video name (a legal folder) is labelled, generated and evaluated: every file named after it is
  digest-shortened (conditions, frames cache, train cache);
- a ``..`` sample path planted in the ``samples`` table is that item's reject, not a failed ``evaluate``;
- a split whose every video is rejected ends "0 videos labelled, N rejects" with rc 0, embeddings on;
- a generate reject is cleared once its item is generated.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from core.tables import Workdir

pytestmark = pytest.mark.integration

LONGER = "w" * 245


def _run(*args: str, ok: bool = True):
    from flows.cli import app

    out = CliRunner().invoke(app, list(args))
    if ok:
        assert out.exit_code == 0, out.output
    return out


def _summary(out) -> dict:
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def staged(sample_root, tmp_path_factory, orchestration_ready):
    """The sample val split plus a 245-byte-named copy of a video: labelled, generated (static) with one sample path
    replaced by a ``..`` path, then evaluated."""
    tmp = tmp_path_factory.mktemp("stages")
    root = tmp / "data" / "sample"
    shutil.copytree(sample_root, root)
    for sub in ("imgs", "panomasks"):
        shutil.copytree(root / sub / "sample_0003", root / sub / LONGER)
    videos = ["sample_0000", "sample_0001", "sample_0002", LONGER]
    (root / "val.txt").write_text("\n".join(videos) + "\n")
    work = str(tmp / "work")
    _run("labels", "--data-root", str(root), "--split", "val", "--dataset", "sample", "--workdir", work, "--set", "labels.embeddings=false")
    _run("generate", "--checkpoint", "static", "--suite", "sample", "--workdir", work)
    wd = Workdir(work)
    samples = wd.read("samples")
    victim = samples[samples["item_id"] != LONGER].iloc[0]
    key = tuple(victim[["checkpoint_id", "suite", "item_id", "seed"]])
    wd.delete("samples", [key])
    wd.append("samples", [{**victim.to_dict(), "video_path": "../../../outside.mp4"}])  # planted: climbs out of the workdir
    evaluated = _run("evaluate", "--checkpoint", "static", "--suite", "sample", "--workdir", work, ok=False)
    return dict(tmp=tmp, work=work, videos=videos, victim=victim["item_id"], evaluated=evaluated)


def test_a_245_byte_video_name_is_labelled_and_generated_with_shortened_file_names(staged):
    wd = Workdir(staged["work"])
    labels, samples, conditions = wd.read("labels"), wd.read("samples"), wd.read("conditions")
    assert LONGER in set(labels["video_id"]) and LONGER in set(samples["item_id"])
    for path in [*labels["frames_path"], *conditions["inputs_path"]]:
        assert len(Path(path).name.encode()) <= 255 and wd.exists(path), path
    assert not wd.read("rejects")["item"].str.contains(LONGER).any()


def test_a_dotdot_sample_path_in_samples_is_a_reject_and_evaluate_goes_on(staged):
    out = staged["evaluated"]
    assert out.exit_code == 0, out.output  # the features task failed the whole evaluate, on every run
    wd = Workdir(staged["work"])
    rejects = wd.read("rejects")
    mine = rejects[rejects["item"].str.contains(staged["victim"], regex=False)]
    assert len(mine) and mine["reason"].str.contains("leaves its folder").all(), mine[["item", "reason"]].to_dict("records")
    objmc = wd.read("metrics").set_index("metric").loc["objmc"]
    assert objmc["n"] == len(staged["videos"]) - 1  # the other items are scored
    assert not (staged["tmp"].parent / "outside.mp4").exists()


def test_a_split_where_every_video_is_rejected_ends_cleanly(sample_root, tmp_path, orchestration_ready):
    root = tmp_path / "data"
    shutil.copytree(sample_root, root)
    (root / "imgs" / "sample_0000" / "00000003.jpg").write_bytes(b"\xff\xd8 truncated")
    (root / "train.txt").write_text("sample_0000\nmissing_video\n")
    work = str(tmp_path / "work")
    out = _run("labels", "--data-root", str(root), "--split", "train", "--workdir", work)  # embeddings on: KeyError 'video_id'
    assert "0 videos labelled, 2 rejects" in out.stderr
    assert _summary(out)["rejects"] == 2 and Workdir(work).read("labels").empty


def test_a_generate_reject_is_cleared_once_its_item_is_generated(tmp_path, orchestration_ready):
    from tasks.user_study import write_user_study_case

    cases = tmp_path / "cases"
    rng = np.random.default_rng(0)
    for k in range(2):
        mask = np.zeros((64, 64), bool)
        mask[20:40, 20:40] = True
        write_user_study_case(cases / f"case{k}", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), [mask],
                              [np.array([[30.0, 30.0], [34.0, 32.0]])])
    good = (cases / "case1" / "demo.json").read_text()
    (cases / "case1" / "demo.json").write_text("{not json")
    work = str(tmp_path / "work")
    opts = ["--workdir", work, "--set", f"evaluate.user_study_dir={cases}"]
    _run("generate", "--checkpoint", "static", "--suite", "user-study", *opts)
    open_rejects = Workdir(work).read("rejects")
    assert list(open_rejects["item"]) == ["static/user-study/case1"] and "is not valid JSON" in open_rejects["reason"].iloc[0]
    (cases / "case1" / "demo.json").write_text(good)  # the cause is fixed
    _run("generate", "--checkpoint", "static", "--suite", "user-study", *opts)
    wd = Workdir(work)
    assert set(wd.read("samples")["item_id"]) == {"case0", "case1"}
    assert wd.read("rejects").empty  # `status` showed 12 open rejects after all 12 videos were made

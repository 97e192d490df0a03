"""The picture of control (`draganything strip`) and the report's paired comparison with control off,
on a workdir made by the real stages."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from core.config import load_config
from core.media import read_frames
from core.tables import Workdir
from eval.bootstrap import paired_ratio_difference
from tasks.embeddings import embed_videos
from tasks.evaluate import objmc_items
from tasks.generate import generate_items
from tasks.labels import VideoRef, label_videos
from tasks.train import run_training
from tasks.verdicts import control_effects, objmc_scores

QUICK = ["train.steps=2", "train.checkpoint_every=2", "train.log_every=1", "generate.num_inference_steps=2"]
VAL = ["sample_0003", "sample_0007"]


@pytest.fixture(scope="module")
def scored(sample_root, tmp_path_factory):
    """A trained checkpoint and the same model with control off, both generated and scored on two val videos."""
    from core.checkpoints import resolve

    root = tmp_path_factory.mktemp("strip-wd")
    wd = Workdir(root)
    cfg = load_config("tiny", QUICK)
    for split, videos in (("train", ["sample_0000"]), ("val", VAL)):
        rows, _ = label_videos(str(sample_root), [VideoRef("sample", split, v) for v in videos], cfg.labels, {}, str(root))
        wd.append("labels", rows)
        wd.append("entity_embeddings", embed_videos(str(root), rows, cfg.model))
    trained = run_training(str(root), cfg, progress=False)["latest"]
    for cid in (trained, trained + "~nocontrol"):
        row = resolve(wd, cid)
        samples, conditions, _ = generate_items(str(root), row, "sample", VAL, cfg)
        wd.append("conditions", conditions)
        wd.append("samples", samples)
        wd.append("objmc", objmc_items(str(root), cid, "sample", VAL, cfg)[0])
    return root, trained, cfg


def test_control_effect_is_the_paired_difference_of_the_two_flat_means(scored):
    root, trained, _ = scored
    wd = Workdir(root)
    (effect,) = control_effects(wd, "sample")
    (scores,) = objmc_scores(wd, "sample").values()
    on, off = scores[trained].items.sort_index(), scores[trained + "~nocontrol"].items.sort_index()
    assert effect["checkpoint_id"] == trained and effect["items"] == 2
    assert effect["on"] == pytest.approx(on["total"].sum() / on["count"].sum())
    assert effect["off"] == pytest.approx(off["total"].sum() / off["count"].sum())
    assert effect["ratio"] == pytest.approx(effect["on"] / effect["off"])
    d = paired_ratio_difference(on["total"], on["count"], off["total"], off["count"], seed=0)
    assert (effect["diff"], effect["low"], effect["high"]) == pytest.approx((d.value, d.low, d.high))
    assert effect["low"] <= effect["diff"] <= effect["high"]


def test_strip_shows_the_first_frame_and_both_videos_frame_by_frame(scored):
    from tasks.strip import LABEL_W, control_strip

    root, trained, cfg = scored
    wd = Workdir(root)
    size = 64
    img = control_strip(wd, cfg, trained, VAL, size=size)
    assert img.shape[0] == 2 * (2 * size) + 8 and img.dtype == np.uint8
    samples = wd.read("samples")
    for row_no, cid in enumerate((trained, trained + "~nocontrol")):
        s = samples[(samples["checkpoint_id"] == cid) & (samples["item_id"] == VAL[0])].iloc[0]
        video = read_frames(wd, s["video_path"].replace(".mp4", ".npz"))
        want = cv2.resize(video[-1], (size, size), interpolation=cv2.INTER_CUBIC)
        block = img[row_no * size : (row_no + 1) * size]
        right = block[:, -size:]  # the last frame's tile, at the right end of its row
        same = (np.abs(right.astype(int) - want.astype(int)).max(-1) <= 2).mean()
        # the tile also carries the entities' circles and paths (the large world's movers cover ~20% of it)
        assert same > 0.65, f"row {row_no} is not {cid}'s last frame ({same:.2f} of pixels match)"
    left = img[:size, LABEL_W : LABEL_W + size]
    assert (np.abs(left.astype(int) - cv2.resize(read_frames(wd, s["video_path"].replace(".mp4", ".npz"))[0], (size, size)).astype(int)) > 20).any(), \
        "the first frame carries the entities and their paths"


def test_strip_without_a_video_says_what_to_generate(scored, tmp_path):
    from tasks.strip import control_strip

    root, trained, cfg = scored
    untrained = trained.replace("s000002", "s000000")  # registered, never generated
    with pytest.raises(ValueError, match=f"no video of '{untrained}'.*draganything generate --checkpoint {untrained} --suite sample"):
        control_strip(Workdir(root), cfg, untrained, VAL[:1])


def test_strip_command_writes_a_png(scored, tmp_path):
    from flows.cli import app

    root, trained, _ = scored
    out = tmp_path / "strip.png"
    r = CliRunner().invoke(app, ["strip", "--workdir", str(root), "--out", str(out), "--item", VAL[1], *sum((["--set", q] for q in QUICK), [])])
    assert r.exit_code == 0, r.output
    png = cv2.imread(str(out))
    assert png is not None and png.shape[0] == 2 * 128

"""Every page renders on a workdir made by the real stages (labels, train, generate, evaluate)."""

from __future__ import annotations

import pytest

from core.checkpoints import reference_row
from core.config import load_config
from core.tables import Workdir
from tasks.embeddings import embed_videos
from tasks.evaluate import objmc_items, summarize
from tasks.generate import generate_items
from tasks.labels import VideoRef, label_videos
from tasks.train import run_training

QUICK = ["train.fit_base.enabled=false", "train.steps=2", "train.checkpoint_every=2", "train.log_every=1", "generate.num_inference_steps=2"]


@pytest.fixture(scope="module")
def pipeline_workdir(sample_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-wd")
    wd = Workdir(root)
    cfg = load_config("tiny", QUICK)
    for split, videos in (("train", ["sample_0000", "sample_0001"]), ("val", ["sample_0003", "sample_0007"])):
        rows, _ = label_videos(str(sample_root), [VideoRef("sample", split, v) for v in videos], cfg.labels, {}, str(root))
        wd.append("labels", rows)
        wd.append("entity_embeddings", embed_videos(str(root), rows, cfg.model))
    trained = run_training(str(root), cfg, progress=False)["latest"]
    checkpoints = wd.read("checkpoints").set_index("checkpoint_id")
    for cid in ("static", "warp", trained):
        row = reference_row(cid) if cid in ("static", "warp") else {"checkpoint_id": cid, **checkpoints.loc[cid].to_dict()}
        wd.append("checkpoints", [row])
        samples, conditions, _ = generate_items(str(root), row, "sample", ["sample_0003", "sample_0007"], cfg)
        wd.append("conditions", conditions)
        wd.append("samples", samples)
        wd.append("objmc", objmc_items(str(root), cid, "sample", ["sample_0003", "sample_0007"], cfg)[0])
        wd.replace("metrics", summarize(str(root), cid, "sample", cfg)[0])
    return root


@pytest.mark.parametrize("page", ["leaderboard", "compare", "training", "vote", "results"])
def test_pages_render_on_pipeline_output(make_app, open_page, page_text, pipeline_workdir, page):
    at = open_page(make_app(pipeline_workdir), page)
    assert not at.exception and not at.error, page_text(at)
    if page == "leaderboard":
        df = at.dataframe[0].value
        assert {"static", "warp"} <= set(df["id"]) and {"ref: static", "ref: warp"} <= set(df["checkpoint"])

"""Generate and evaluate as plain functions on the sample suite (model-free generators)."""

import av
import numpy as np
import pytest

from core.checkpoints import reference_row
from core.config import load_config
from core.media import read_frames
from core.tables import Workdir
from tasks.evaluate import objmc_items, summarize
from tasks.features import cache_features, feature_jobs
from tasks.generate import generate_items, load_suite
from tasks.labels import VideoRef, label_videos

VAL = ["sample_0003", "sample_0007"]


@pytest.fixture(scope="module")
def bench_workdir(sample_root, tmp_path_factory):
    """A workdir with the sample val split labelled, and static + warp generated and scored."""
    root = tmp_path_factory.mktemp("bench")
    wd = Workdir(root)
    cfg = load_config("tiny")
    rows, _ = label_videos(str(sample_root), [VideoRef("sample", "val", v) for v in VAL], cfg.labels, {}, str(root))
    wd.append("labels", rows)
    for name in ("static", "warp"):
        wd.append("checkpoints", [reference_row(name)])
        samples, conditions, rejects = generate_items(str(root), reference_row(name), "sample", VAL, cfg)
        assert not rejects
        wd.append("conditions", conditions)
        wd.append("samples", samples)
        rows, rejects = objmc_items(str(root), name, "sample", VAL, cfg)
        assert not rejects
        wd.append("objmc", rows)
        wd.replace("metrics", summarize(str(root), name, "sample", cfg)[0])
    return wd


def _metric(wd, cid, metric):
    m = wd.read("metrics")
    return m[(m["checkpoint_id"] == cid) & (m["metric"] == metric)].iloc[0]


def test_warp_beats_static_on_objmc_by_a_wide_margin(bench_workdir):
    warp, static = _metric(bench_workdir, "warp", "objmc"), _metric(bench_workdir, "static", "objmc")
    assert warp.value < 0.25 * static.value, (warp.value, static.value)
    # 2 items: the studentised interval needs 3, so there is none (nan ends), and the method says which it would be
    assert warp.n == 2 and np.isnan(warp.ci_low) and np.isnan(warp.ci_high) and warp.ci_method.startswith("studentised")


def test_fid_fvd_rows_name_their_backbone(bench_workdir):
    m = bench_workdir.read("metrics")
    got = set(zip(m["metric"], m["backbone"]))
    assert ("fid", "fallback-frame-v1") in got and ("fvd", "fallback-clip-v1") in got
    assert ("kid", "fallback-frame-v1") in got and ("kvd", "fallback-clip-v1") in got
    distances = m[m["metric"].isin(["objmc", "fid", "fvd"])]
    assert (distances["value"] >= 0).all()  # KID/KVD are unbiased estimates and may be slightly negative


def test_samples_are_browser_playable_h264(bench_workdir):
    s = bench_workdir.read("samples").iloc[0]
    with av.open(bench_workdir.path(s["video_path"])) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        n = sum(1 for _ in c.decode(stream))
    L = load_config("tiny").labels.frames.count  # the sample suite has the labels' frames (at most 14)
    assert n == s["frames"] == L and (s["height"], s["width"]) == (256, 256)


def test_rerun_skips_existing_and_is_deterministic(bench_workdir):
    cfg = load_config("tiny")
    again, _, _ = generate_items(bench_workdir.url, reference_row("warp"), "sample", VAL, cfg)
    assert again == []  # everything exists
    items, _ = load_suite(bench_workdir, "sample", cfg, VAL[:1])
    from tasks.generate import WarpGenerator

    frames = WarpGenerator()(items[0], seed=0)
    stored = read_frames(bench_workdir, "samples/warp/sample/sample_0003/seed0.npz")
    assert np.array_equal(frames, stored)


def test_feature_cache_is_reused(bench_workdir):
    cfg = load_config("tiny")
    samples = bench_workdir.read("samples")
    conditions = bench_workdir.read("conditions")
    refs = []
    for cid in ("warp", "static"):
        refs += feature_jobs(samples[samples["checkpoint_id"] == cid], conditions[conditions["checkpoint_id"] == cid])
    assert len(refs) == 4 + 2 + 2  # 2 generators x 2 items + the 2 real clips (listed per generator, computed once)
    before = {p: bench_workdir.fs.modified(p) for p in bench_workdir.fs.find(bench_workdir.path("features"))}
    cache_features(bench_workdir.url, refs, "sample", cfg)
    after = {p: bench_workdir.fs.modified(p) for p in bench_workdir.fs.find(bench_workdir.path("features"))}
    assert before == after and len(after) == 6


def test_a_bad_user_study_case_is_rejected_and_the_rest_generated(sample_root, tmp_path):
    import shutil

    cases = tmp_path / "cases"
    shutil.copytree(sample_root / "user_study", cases)
    bad = sorted(cases.iterdir())[0]
    next(bad.glob("mask_*.jpg")).unlink()
    cfg = load_config("tiny", {"evaluate.user_study_dir": str(cases)})
    ids = sorted(p.name for p in cases.iterdir())
    rows, _, rejects = generate_items(str(tmp_path / "w"), reference_row("warp"), "user-study", ids, cfg)
    assert [r["item"] for r in rejects] == [f"warp/user-study/{bad.name}"]
    assert "missing" in rejects[0]["reason"]
    assert {r["item_id"] for r in rows} == set(ids) - {bad.name}


def test_a_controller_makes_one_frame_per_path_point_at_the_paths_timing_and_the_models_size(bench_workdir):
    """Point k of a suite path is frame k: the model runs at the path's length, never resampled.
    Frames stay at the model's size (ObjMC tracks them there), not upscaled to the suite's."""
    from model.pipeline import build_pipeline
    from tasks.controller import ControllerGenerator

    cfg = load_config("tiny", ["model.num_frames=4"])
    item = load_suite(bench_workdir, "sample", cfg, VAL[:1])[0][0]
    L = item.trajectories.shape[1]
    assert L != cfg.model.num_frames
    pipe = build_pipeline(cfg.model)
    calls = []

    def spy(**kw):  # records what the real pipeline is asked for, then runs it
        calls.append(kw)
        return pipe(**kw)

    gen = ControllerGenerator(pipe, cfg.model, cfg.generate.model_copy(update={"num_inference_steps": 1}))
    gen.pipe = spy
    frames = gen(item, seed=0)
    assert frames.shape == (L, cfg.model.height, cfg.model.width, 3) and item.hw != (cfg.model.height, cfg.model.width)
    assert calls[0]["num_frames"] == L
    assert np.array_equal(np.stack(calls[0]["trajectories"]), item.trajectories)

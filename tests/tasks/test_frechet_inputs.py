"""FID/FVD inputs: both sides at one size, features keyed by content, the official FVD on the suite's whole clips, the user study."""

import numpy as np
import pytest

from core.checkpoints import reference_row
from core.config import load_config
from core.media import write_frames
from core.tables import Workdir
from eval.catalog import Identity
from tasks import features as feats
from tasks.generate import generate_items
from tasks.labels import VideoRef, label_videos

VAL = ["sample_0003", "sample_0007"]


class Recording:
    """The real fallback extractor, remembering the size of every input it is given."""

    def __init__(self, inner):
        self.inner, self.name, self.dim, self.sizes = inner, inner.name, inner.dim, []

    def __call__(self, x):
        self.sizes.append(tuple(x.shape[-3:-1]))
        return self.inner(x)


@pytest.fixture(scope="module")
def small_world(sample_root, tmp_path_factory):
    """static at the suite's 256 x 256, and a 'small' checkpoint whose videos are the same at 64 x 64."""
    root = tmp_path_factory.mktemp("frechet")
    wd = Workdir(root)
    cfg = load_config("tiny")
    rows, _ = label_videos(str(sample_root), [VideoRef("sample", "val", v) for v in VAL], cfg.labels, {}, str(root))
    wd.append("labels", rows)
    samples, conditions, _ = generate_items(str(root), reference_row("static"), "sample", VAL, cfg)
    wd.append("conditions", conditions)
    wd.append("samples", samples)
    import cv2

    small_s, small_c = [], []
    for s, c in zip(samples, conditions):
        frames = np.load(wd.path(s["video_path"].replace(".mp4", ".npz")))["frames"]
        tiny = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in frames])
        rel = s["video_path"].replace("/static/", "/small/")
        write_frames(wd, rel.replace(".mp4", ".npz"), tiny)
        small_s.append({**s, "checkpoint_id": "small", "video_path": rel, "height": 64, "width": 64})
        small_c.append({**c, "checkpoint_id": "small"})
    wd.append("samples", small_s)
    wd.append("conditions", small_c)
    return wd, cfg


def _metrics(wd, cfg, cid):
    s = wd.read("samples")
    c = wd.read("conditions")
    return feats.frechet_metrics(wd, cfg, cid, "sample", s[s["checkpoint_id"] == cid], c[c["checkpoint_id"] == cid])


def test_both_sides_reach_the_networks_at_the_suites_size(small_world, monkeypatch):
    wd, cfg = small_world
    ex = feats.extractors(cfg)
    rec = feats.Extractors(Recording(ex.frames), Recording(ex.clips))
    monkeypatch.setattr(feats, "extractors", lambda _cfg: rec)
    if wd.exists("features"):
        wd.fs.rm(wd.path("features"), recursive=True)  # every video goes through the networks
    rows, _ = _metrics(wd, cfg, "small")
    sizes = set(rec.frames.sizes) | set(rec.clips.sizes)
    assert sizes == {(256, 256)}, sizes  # the 64 x 64 videos and the 256 x 256 real clips, one size
    assert {r["metric"] for r in rows} == {"fid", "kid", "fvd", "kvd"}
    assert all("at 256x256" in r["identity"] for r in rows)


def test_features_are_keyed_by_content_not_by_name(small_world):
    wd, cfg = small_world
    a = np.zeros((8, 256, 256, 3), np.uint8)
    b = a.copy()
    b[:, :10] = 255
    pa, pb = (feats.feature_path(feats.extractors(cfg).backbones, v, 8) for v in (a, b))
    assert pa != pb and pa == feats.feature_path(feats.extractors(cfg).backbones, a.copy(), 8)
    assert feats.feature_path(feats.extractors(cfg).backbones, a, 16) != pa  # another clip length, another entry


def test_official_fvd_scores_the_suites_whole_clips_with_n_minus_1(small_world):
    wd, _ = small_world
    cfg = load_config("tiny", ["evaluate.protocol=official"])
    frames = int(wd.read("conditions")["frames"].iloc[0])
    rows, why = _metrics(wd, cfg, "small")
    by = {r["metric"]: r for r in rows}
    assert set(by) == {"fid", "kid", "fvd", "kvd"} and not why
    assert f"{frames}-frame clips" in by["fvd"]["identity"] and Identity.read(by["fvd"]["identity"], "fvd").label.endswith("ddof 1")
    assert np.isfinite(by["fvd"]["value"]) and by["fvd"]["value"] > 0 and by["fvd"]["protocol"] == "official"
    # 2 items, 112-d fallback features: no interval, and the row says why
    assert np.isnan(by["fvd"]["ci_low"]) and "n < d" in by["fvd"]["ci_method"]


def test_official_fvd_drop_to_a_multiple_of_16_is_an_option_with_a_reason(small_world):
    wd, _ = small_world
    cfg = load_config("tiny", ["evaluate.protocol=official", "evaluate.fvd_drop_to_batch=true"])
    rows, why = _metrics(wd, cfg, "small")
    assert [r["metric"] for r in rows] == ["fid", "kid"]
    assert why and why[0][0] == "fvd" and why[0][1].startswith("evaluate.fvd_drop_to_batch keeps the first 0 of 2 videos")


def test_fvd_divides_covariances_by_n_and_fid_by_n_minus_1(small_world):
    wd, cfg = small_world
    rows, _ = _metrics(wd, cfg, "small")
    by = {r["metric"]: r for r in rows}
    assert Identity.read(by["fid"]["identity"], "fid").label.endswith("ddof 1") and Identity.read(by["fvd"]["identity"], "fvd").label.endswith("ddof 0")
    assert by["fvd"]["ci_method"].startswith("grouped jackknife") and len(by["fvd"]["replicates"]) == 2


def test_user_study_fid_is_last_frames_against_the_input_images_and_one_case_does_not_crash(sample_root, tmp_path):
    import shutil

    cases = tmp_path / "cases"
    shutil.copytree(sample_root / "user_study", cases)
    cfg = load_config("tiny", {"evaluate.user_study_dir": str(cases)})
    wd = Workdir(tmp_path / "w")
    ids = sorted(p.name for p in cases.iterdir())
    samples, conditions, rejects = generate_items(wd.url, reference_row("warp"), "user-study", ids, cfg)
    assert not rejects
    wd.append("conditions", conditions)
    wd.append("samples", samples)
    s, c = wd.read("samples"), wd.read("conditions")
    rows, why = feats.frechet_metrics(wd, cfg, "warp", "user-study", s, c)
    assert [r["metric"] for r in rows] == ["fid", "kid"] and "last frame vs input image" in rows[0]["identity"]
    assert rows[0]["n"] == len(ids) and not why
    one = s[s["item_id"] == ids[0]]
    rows, why = feats.frechet_metrics(wd, cfg, "warp", "user-study", one, c)
    assert rows == [] and "one item only" in why[0][1]

"""The evaluate stage's units of work: samples in, ``objmc`` and ``metrics`` rows out.

- ``objmc_items``: track each entity in each generated video, score against the
  suite's trajectories at the original video size (official flat mean).
- ``cache_features``: FID frame features and FVD clip features of a video,
  computed once per (backbone, video) and kept under ``features/`` — the real
  clips' features are shared by every checkpoint.
- ``summarize``: the metrics with bootstrap confidence intervals over items.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.config import Config
from core.media import load_cached_clip, read_frames, read_npz, resize_clip, write_npz
from core.tables import Workdir, now_utc
from eval.bootstrap import ItemFeatures, bootstrap_frechet, bootstrap_ratio
from eval.features import clip_extractor, frame_extractor, video_features
from eval.objmc import EntityScore, ItemScore, ObjMCResult, score_video
from eval.trackers import tracker_for
from tasks.suites import SuiteItem
from tasks.generate import load_suite

STAGE = "evaluate"


def _mean_over_seeds(item_id: str, scores: list[ItemScore]) -> ItemScore:
    """One score per item: each entity's per-frame error averaged over the seeds' videos."""
    if len(scores) == 1:
        return scores[0]
    by_entity: dict[str, list[EntityScore]] = {}
    for s in scores:
        for e in s.entities:
            by_entity.setdefault(e.entity_id, []).append(e)
    ents = []
    for eid, es in by_entity.items():
        L = min(len(e.per_frame) for e in es)
        stack = np.stack([e.per_frame[:L] for e in es])
        with np.errstate(invalid="ignore"):
            per_frame = np.where(np.isfinite(stack).any(0), np.nanmean(np.where(np.isfinite(stack), stack, np.nan), 0), np.nan)
        ents.append(EntityScore(eid, per_frame, max(e.unmatched for e in es), max(e.pred_missing for e in es)))
    return ItemScore(item_id, ents, scores[0].missing_entities, scores[0].extra_entities)


def objmc_items(workdir_url: str, checkpoint_id: str, suite: str, item_ids: list[str], cfg: Config) -> list[dict]:
    """``objmc`` rows for these items' samples (all seeds)."""
    wd = Workdir(workdir_url)
    samples = wd.read("samples")
    samples = samples[(samples["checkpoint_id"] == checkpoint_id) & (samples["suite"] == suite)]
    items = {i.item_id: i for i in load_suite(wd, suite, cfg, item_ids)[0]}
    tracker = tracker_for(cfg.evaluate.tracker)
    scores = []
    for item_id in item_ids:
        item = items.get(item_id)
        rows = samples[samples["item_id"] == item_id].sort_values("seed")
        if item is None or rows.empty:
            continue
        per_seed = []
        for _, s in rows.iterrows():
            frames = read_frames(wd, s["video_path"].replace(".mp4", ".npz"))
            score, _ = score_video(
                item_id,
                frames,
                item.trajectories,
                item.entity_ids,
                item.visible,
                gt_hw=item.hw,
                eval_hw=item.orig_hw,
                tracker=tracker,
                grid_size=cfg.evaluate.grid_size,
                add_centers=cfg.evaluate.add_centers,
            )
            per_seed.append(score)
        scores.append(_mean_over_seeds(item_id, per_seed))
    return ObjMCResult(scores).rows(checkpoint_id, suite, tracker_name(cfg))


def tracker_name(cfg: Config) -> str:
    return cfg.evaluate.tracker.kind


# --- features --------------------------------------------------------------------


@dataclass(frozen=True)
class Extractors:
    frames: object
    clips: object

    @property
    def backbones(self) -> tuple[str, str]:
        return self.frames.name, self.clips.name  # type: ignore[attr-defined]


_EXTRACTORS: dict[tuple, Extractors] = {}


def extractors(cfg: Config) -> Extractors:
    """FID/FVD backbones from the configured local files (fallbacks without), built once per process."""
    key = (cfg.evaluate.inception_path, cfg.evaluate.i3d_path)
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = Extractors(frame_extractor(cfg.evaluate.inception_path), clip_extractor(cfg.evaluate.i3d_path))
    return _EXTRACTORS[key]


def feature_path(backbones: tuple[str, str], video_ref: str, frames: int, hw: tuple[int, int]) -> str:
    digest = hashlib.sha1(f"{video_ref}|{frames}|{hw}".encode()).hexdigest()[:24]
    return f"features/{backbones[0]}+{backbones[1]}/{digest}.npz"


def _load_video(wd: Workdir, ref: str, frames: int, hw: tuple[int, int]) -> np.ndarray:
    """A sample's frames (``samples/...npz``) or a real clip from the frames cache, at ``hw``."""
    if ref.startswith("frames/"):
        clip, ids = load_cached_clip(wd, ref)
        clip, _ = resize_clip(clip[:frames], ids[:frames], hw)
        return clip
    return read_frames(wd, ref)[:frames]


def cached_features(wd: Workdir, cfg: Config, ref: str, frames: int, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(frame features (T, D1), clip feature (1, D2)) of one video, computed at most once."""
    ex = extractors(cfg)
    path = feature_path(ex.backbones, ref, frames, hw)
    if wd.exists(path):
        z = read_npz(wd, path)
        return z["frames"], z["clip"]
    video = _load_video(wd, ref, frames, hw)
    ff, cf = video_features(video, ex.frames, ex.clips)
    write_npz(wd, path, frames=ff.astype(np.float32), clip=cf.astype(np.float32))
    return ff, cf


def feature_refs(samples: pd.DataFrame, items: list[SuiteItem]) -> list[tuple[str, int, tuple[int, int]]]:
    """Every video whose features the metrics need: the samples and the suite's real clips."""
    shape = {i.item_id: (i.trajectories.shape[1], i.hw) for i in items}
    refs = [(s.video_path.replace(".mp4", ".npz"), *shape[s.item_id]) for s in samples.itertuples() if s.item_id in shape]
    refs += [(i.reference, i.trajectories.shape[1], i.hw) for i in items if i.reference]
    return refs


def cache_features(workdir_url: str, refs: list[tuple[str, int, tuple[int, int]]], cfg: Config) -> int:
    wd = Workdir(workdir_url)
    for ref, frames, hw in refs:
        cached_features(wd, cfg, ref, frames, tuple(hw))
    return len(refs)


# --- the stage's work list ------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """What an evaluation of (checkpoint, suite) has to do."""

    items: list[str]  # every item with a sample
    objmc: list[str]  # items without ObjMC rows yet
    features: list[tuple[str, int, tuple[int, int]]]  # videos whose features the metrics need
    up_to_date: bool  # nothing new since the last evaluation


def pending(wd: Workdir, checkpoint_id: str, suite: str, cfg: Config) -> Pending:
    """The work of evaluating a checkpoint on a suite; a ``ValueError`` when it has no samples."""
    samples = wd.read("samples")
    samples = samples[(samples["checkpoint_id"] == checkpoint_id) & (samples["suite"] == suite)]
    if samples.empty:
        raise ValueError(f"no samples of '{checkpoint_id}' on '{suite}' in {wd.url}; run `draganything generate` first")
    scored = {(c, b, i) for c, b, i, _ in wd.keys("objmc")}
    items = sorted(set(samples["item_id"]))
    todo = [i for i in items if (checkpoint_id, suite, i) not in scored]
    done = {m for c, b, m, _ in wd.keys("metrics") if c == checkpoint_id and b == suite}
    if not todo and "objmc" in done:
        return Pending(items, [], [], True)
    return Pending(items, todo, feature_refs(samples, load_suite(wd, suite, cfg, items)[0]), False)


def metric_values(wd: Workdir, checkpoint_id: str, suite: str) -> dict[str, float]:
    """``{"metric[backbone]": value}`` of a checkpoint on a suite (for a run's summary)."""
    metrics = wd.read("metrics")
    metrics = metrics[(metrics["checkpoint_id"] == checkpoint_id) & (metrics["suite"] == suite)]
    return {f"{m.metric}[{m.backbone}]": round(m.value, 4) for m in metrics.itertuples()}


# --- metrics ---------------------------------------------------------------------


def summarize(workdir_url: str, checkpoint_id: str, suite: str, cfg: Config) -> list[dict]:
    """``metrics`` rows: ObjMC, FID, FVD with bootstrap intervals over items."""
    wd = Workdir(workdir_url)
    ev = cfg.evaluate
    rows = []
    objmc = wd.read("objmc")
    objmc = objmc[(objmc["checkpoint_id"] == checkpoint_id) & (objmc["suite"] == suite)]
    if not objmc.empty:
        per_frame = objmc.groupby("item_id")["per_frame"].apply(lambda s: np.concatenate([np.asarray(x, float) for x in s]))
        totals = per_frame.apply(np.nansum).to_numpy()
        counts = per_frame.apply(lambda a: np.isfinite(a).sum()).to_numpy().astype(float)
        ci = bootstrap_ratio(totals, counts, n_boot=ev.bootstrap, confidence=ev.confidence)
        rows.append(_metric(checkpoint_id, suite, "objmc", f"tracker:{objmc['tracker'].iloc[0]}", ci.value, ci.low, ci.high, len(totals)))

    samples = wd.read("samples")
    samples = samples[(samples["checkpoint_id"] == checkpoint_id) & (samples["suite"] == suite)].sort_values(["item_id", "seed"])
    if samples.empty:
        return rows
    items = {i.item_id: i for i in load_suite(wd, suite, cfg, sorted(set(samples["item_id"])))[0]}
    ex = extractors(cfg)
    gen_frames, gen_clips, real_frames, real_clips = [], [], [], []
    for item_id, group in samples.groupby("item_id", sort=True):
        item = items.get(item_id)
        if item is None:
            continue
        L, hw = item.trajectories.shape[1], item.hw
        feats = [cached_features(wd, cfg, s.replace(".mp4", ".npz"), L, hw) for s in group["video_path"]]
        gen_frames.append(np.concatenate([f for f, _ in feats]))
        gen_clips.append(np.concatenate([c for _, c in feats]))
        if item.reference:
            rf, rc = cached_features(wd, cfg, item.reference, L, hw)
        else:  # stills (user study): the input image is the only real frame there is
            rf, rc = ex.frames(item.image[None]), None
        real_frames.append(rf)
        if rc is not None:
            real_clips.append(rc)
    n_boot = ev.bootstrap_frechet
    if len(gen_frames) >= 1 and sum(len(f) for f in gen_frames) >= 2:
        ci = bootstrap_frechet(ItemFeatures(gen_frames), ItemFeatures(real_frames), paired=True, n_boot=n_boot, confidence=ev.confidence)
        rows.append(_metric(checkpoint_id, suite, "fid", ex.backbones[0], ci.value, ci.low, ci.high, len(gen_frames)))
    if len(real_clips) == len(gen_clips) and len(gen_clips) >= 2:
        ci = bootstrap_frechet(ItemFeatures(gen_clips), ItemFeatures(real_clips), paired=True, n_boot=n_boot, confidence=ev.confidence)
        rows.append(_metric(checkpoint_id, suite, "fvd", ex.backbones[1], ci.value, ci.low, ci.high, len(gen_clips)))
    return rows


def _metric(cid: str, suite: str, metric: str, backbone: str, value: float, lo: float, hi: float, n: int) -> dict:
    return dict(
        checkpoint_id=cid,
        suite=suite,
        metric=metric,
        backbone=backbone,
        value=float(value),
        ci_low=float(lo),
        ci_high=float(hi),
        n=int(n),
        created_at=now_utc(),
    )

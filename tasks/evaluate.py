"""The evaluate stage's units of work: samples in, ``objmc`` and ``metrics`` rows out.

- ``objmc_items``: track each entity in each generated video, score against the
  benchmark's trajectories at the original video size (official flat mean).
- ``cache_features``: FID frame features and FVD clip features of a video,
  computed once per (backbone, video) and kept under ``features/`` — the real
  clips' features are shared by every checkpoint.
- ``summarize``: the metrics with bootstrap confidence intervals over items.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import Config
from core.tables import Workdir, now_utc
from eval.bootstrap import ItemFeatures, bootstrap_frechet, bootstrap_ratio
from eval.features import clip_extractor, frame_extractor, video_features
from eval.objmc import EntityScore, ItemScore, ObjMCResult, as_points, score, score_video
from tasks.benchmarks import BenchmarkItem
from tasks.generate import load_benchmark, read_frames
from tasks.labels import load_cached_clip, resize_clip, tracker_for

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


def objmc_items(workdir_url: str, checkpoint_id: str, benchmark: str, item_ids: list[str], cfg: Config) -> list[dict]:
    """``objmc`` rows for these items' samples (all seeds)."""
    wd = Workdir(workdir_url)
    samples = wd.read("samples")
    samples = samples[(samples["checkpoint_id"] == checkpoint_id) & (samples["benchmark"] == benchmark)]
    items = {i.item_id: i for i in load_benchmark(wd, benchmark, cfg, item_ids)[0]}
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
    return objmc_rows(ObjMCResult(scores), checkpoint_id, benchmark, tracker_name(cfg))


def objmc_rows(result: ObjMCResult, checkpoint_id: str, benchmark: str, tracker: str) -> list[dict]:
    """Rows of the ``objmc`` table (entity ids must be integers there)."""
    return [
        dict(
            checkpoint_id=checkpoint_id,
            benchmark=benchmark,
            item_id=item.item_id,
            entity_id=int(e.entity_id),
            error_px=e.error_px,
            per_frame=[float(v) for v in e.per_frame],
            tracker=tracker,
        )
        for item in result.items
        for e in item.entities
    ]


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
        with wd.fs.open(wd.path(path), "rb") as f:
            z = np.load(io.BytesIO(f.read()))
            return z["frames"], z["clip"]
    video = _load_video(wd, ref, frames, hw)
    ff, cf = video_features(video, ex.frames, ex.clips)

    def write(f) -> None:
        buf = io.BytesIO()
        np.savez(buf, frames=ff.astype(np.float32), clip=cf.astype(np.float32))
        f.write(buf.getbuffer())

    wd.write_atomic(wd.path(path), write)
    return ff, cf


def feature_refs(samples: pd.DataFrame, items: list[BenchmarkItem]) -> list[tuple[str, int, tuple[int, int]]]:
    """Every video whose features the metrics need: the samples and the benchmark's real clips."""
    shape = {i.item_id: (i.trajectories.shape[1], i.hw) for i in items}
    refs = [(s.video_path.replace(".mp4", ".npz"), *shape[s.item_id]) for s in samples.itertuples() if s.item_id in shape]
    refs += [(i.reference, i.trajectories.shape[1], i.hw) for i in items if i.reference]
    return refs


def cache_features(workdir_url: str, refs: list[tuple[str, int, tuple[int, int]]], cfg: Config) -> int:
    wd = Workdir(workdir_url)
    for ref, frames, hw in refs:
        cached_features(wd, cfg, ref, frames, tuple(hw))
    return len(refs)


# --- metrics ---------------------------------------------------------------------


def summarize(workdir_url: str, checkpoint_id: str, benchmark: str, cfg: Config) -> list[dict]:
    """``metrics`` rows: ObjMC, FID, FVD with bootstrap intervals over items."""
    wd = Workdir(workdir_url)
    ev = cfg.evaluate
    rows = []
    objmc = wd.read("objmc")
    objmc = objmc[(objmc["checkpoint_id"] == checkpoint_id) & (objmc["benchmark"] == benchmark)]
    if not objmc.empty:
        per_frame = objmc.groupby("item_id")["per_frame"].apply(lambda s: np.concatenate([np.asarray(x, float) for x in s]))
        totals = per_frame.apply(np.nansum).to_numpy()
        counts = per_frame.apply(lambda a: np.isfinite(a).sum()).to_numpy().astype(float)
        ci = bootstrap_ratio(totals, counts, n_boot=ev.bootstrap, confidence=ev.confidence)
        rows.append(_metric(checkpoint_id, benchmark, "objmc", f"tracker:{objmc['tracker'].iloc[0]}", ci.value, ci.low, ci.high, len(totals)))

    samples = wd.read("samples")
    samples = samples[(samples["checkpoint_id"] == checkpoint_id) & (samples["benchmark"] == benchmark)].sort_values(["item_id", "seed"])
    if samples.empty:
        return rows
    items = {i.item_id: i for i in load_benchmark(wd, benchmark, cfg, sorted(set(samples["item_id"])))[0]}
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
        rows.append(_metric(checkpoint_id, benchmark, "fid", ex.backbones[0], ci.value, ci.low, ci.high, len(gen_frames)))
    if len(real_clips) == len(gen_clips) and len(gen_clips) >= 2:
        ci = bootstrap_frechet(ItemFeatures(gen_clips), ItemFeatures(real_clips), paired=True, n_boot=n_boot, confidence=ev.confidence)
        rows.append(_metric(checkpoint_id, benchmark, "fvd", ex.backbones[1], ci.value, ci.low, ci.high, len(gen_clips)))
    return rows


def _metric(cid: str, benchmark: str, metric: str, backbone: str, value: float, lo: float, hi: float, n: int) -> dict:
    return dict(
        checkpoint_id=cid,
        benchmark=benchmark,
        metric=metric,
        backbone=backbone,
        value=float(value),
        ci_low=float(lo),
        ci_high=float(hi),
        n=int(n),
        created_at=now_utc(),
    )


# --- official trajectory JSON folders -------------------------------------------
# One file ``<video_id>.json`` per video holding ``{entity_id: [[x, y], ...]}`` (pixel
# coordinates, one point per frame; the official files hold ints, and tracker points
# off the frame: negative or beyond it). Extension: a point may be ``null`` for a frame
# where the entity is invisible (written only for ground truth with visibility).


def _finite_or_none(p: np.ndarray) -> list | None:
    return [float(p[0]), float(p[1])] if np.all(np.isfinite(p)) else None


def write_trajectories(path: str | Path, trajectories: Mapping[str, object], visible: Mapping[str, object] | None = None) -> None:
    """One video's file: ``{entity_id: [[x, y], ...]}``; invisible (or non-finite) points as null."""
    vis = {str(k): v for k, v in (visible or {}).items()}
    out = {}
    for eid, traj in trajectories.items():
        p = as_points(traj)
        v = np.asarray(vis[str(eid)], bool) if str(eid) in vis else np.ones(len(p), bool)
        if len(v) != len(p):
            raise ValueError(f"{path}: entity {eid} has {len(p)} points but {len(v)} visibility flags")
        out[str(eid)] = [_finite_or_none(q) if ok else None for q, ok in zip(p, v)]
    Path(path).write_text(json.dumps(out))


def read_trajectories(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One video's file -> (entity id -> (T, 2) with NaN for null points, entity id -> visible (T,))."""
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected an object {{entity_id: [[x, y], ...]}}, got {type(raw).__name__}")
    traj, vis = {}, {}
    for eid, pts in raw.items():
        p = as_points(pts)
        traj[str(eid)] = p
        vis[str(eid)] = np.isfinite(p).all(axis=1)
    return traj, vis


def write_trajectory_dir(
    directory: str | Path,
    videos: Mapping[str, Mapping[str, object]],
    visible: Mapping[str, Mapping[str, object]] | None = None,
) -> list[Path]:
    """Write ``<directory>/<video_id>.json`` per video; returns the paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for vid, ents in videos.items():
        p = d / f"{vid}.json"
        write_trajectories(p, ents, (visible or {}).get(vid))
        paths.append(p)
    return paths


def read_trajectory_dir(directory: str | Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """All ``*.json`` of a directory -> (video_id -> trajectories, video_id -> visibility)."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"trajectory directory {d} does not exist")
    trajs, vis = {}, {}
    for p in sorted(d.glob("*.json")):
        trajs[p.stem], vis[p.stem] = read_trajectories(p)
    return trajs, vis


def score_dirs(
    gt_dir: str | Path,
    pred_dir: str | Path,
    pred_hw: tuple[int, int] | None = None,
    gt_hw: tuple[int, int] | None = None,
    eval_hw: tuple[int, int] | None = None,
) -> ObjMCResult:
    """``--gt DIR --pred DIR``: score every ground-truth video; null GT points are invisible frames.

    Without sizes both directories are taken to be at the evaluation resolution
    (the official script's assumption).
    """
    gt, vis = read_trajectory_dir(gt_dir)
    pred, _ = read_trajectory_dir(pred_dir)
    if not gt:
        raise FileNotFoundError(f"no *.json trajectory files in the ground-truth directory {gt_dir}")
    return score(pred, gt, vis, pred_hw, gt_hw, eval_hw)

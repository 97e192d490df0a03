"""The evaluate stage's units of work: samples and their conditions in, ``objmc`` and ``metrics`` rows out.

- ``objmc_items``: track each entity in each generated video with the configured
  protocol's rules (``eval.protocol``), score against the trajectories the video was
  asked to follow (the ``conditions`` table, frozen at generate time) at the evaluation
  size, official flat mean. The predicted tracks are stored with the errors.
- ``summarize``: the metrics of a checkpoint on a suite from *all* its scored items
  (ObjMC with a bootstrap interval over items; FID/FVD in ``tasks.features``), each with
  its identity; the flow replaces the metric rows and keeps the old values as history.
- the official trajectory JSON folders (``score_dirs``: ``draganything evaluate objmc``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import Config
from core.media import read_frames, resize_clip
from core.rejects import ItemError, is_infrastructure_error, reject_row
from core.suites import SUITES
from core.tables import Workdir, now_utc
from eval.bootstrap import studentized_ratio
from eval.catalog import Identity, identities_of, objmc_identity, protocol_of, tracker_of, tracking_rules
from eval.objmc import EntityScore, ItemScore, ObjMCResult, as_points, item_sums, score, score_item, score_video
from eval.trackers import tracker_for
from tasks.conditions import read_conditions, starts_of, trajectories_of, visible_of
from tasks.features import feature_jobs, frechet_metrics, items_digest
from tasks.suites import LABELS_GROUND_TRUTH, ground_truth_identity, same_ground_truth

STAGE = "evaluate"
RESCORE_HINT = "fix what the reason names, then run `draganything evaluate` again: only unscored videos are scored"


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


def expected_ground_truth(cfg: Config, suite: str) -> str | None:
    """How this config makes a suite's ground truth (None: nothing to check, e.g. user-study paths)."""
    spec = SUITES[suite]
    if spec.kind != "labels":
        return None
    protocol = protocol_of(cfg)
    return LABELS_GROUND_TRUTH if protocol.ground_truth != "tracked" else ground_truth_identity(protocol, tracker_of(cfg), spec)


def _of_identity(rows: pd.DataFrame, identity: Identity, metric: str | None = "objmc") -> pd.DataFrame:
    """The rows (with an ``identity`` column) measured as ``identity``; old parts' prose identities included."""
    if rows.empty:
        return rows
    return rows[identities_of(rows, metric).map(lambda i: i == identity).astype(bool)]


def scored_seeds(wd: Workdir, checkpoint_id: str, suite: str, identity: Identity) -> dict[str, set[int]]:
    """Per item: the seeds whose videos have ObjMC rows of ``identity`` (what is already scored)."""
    import pyarrow.compute as pc

    filt = (pc.field("checkpoint_id") == checkpoint_id) & (pc.field("suite") == suite)
    rows = _of_identity(wd.read("objmc", columns=["item_id", "seeds", "identity"], filter=filt), identity)
    out: dict[str, set[int]] = {}
    for item_id, seeds in zip(rows["item_id"], rows["seeds"]):
        out.setdefault(str(item_id), set()).update(int(x) for x in (seeds if seeds is not None else []))
    return out


def _stored_scores(old: pd.DataFrame, item_id: str, gt: np.ndarray, entity_ids: list, vis: np.ndarray,
                   item_hw: tuple[int, int], eval_hw: tuple[int, int]) -> dict[int, tuple[ItemScore, dict, tuple[int, int]]]:
    """Seed -> (score, tracks, video size) re-made from the tracks an earlier evaluate stored (no tracking)."""
    if old.empty or old["tracks"].isna().any() or old["seeds"].isna().any():
        return {}
    ids = [str(e) for e in entity_ids]
    gts = {e: gt[k] for k, e in enumerate(ids)}
    vis_d = {e: vis[k] for k, e in enumerate(ids)}
    out = {}
    for k, seed in enumerate(old["seeds"].iloc[0]):
        pred = {str(r.entity_id): np.asarray([list(p) for p in r.tracks[k]], np.float64) for r in old.itertuples()}
        hw = (int(old["video_height"].iloc[0]), int(old["video_width"].iloc[0]))
        out[int(seed)] = (score_item(item_id, pred, {e: gts[e] for e in pred}, vis_d, hw, item_hw, eval_hw), pred, hw)
    return out


def objmc_items(workdir_url: str, checkpoint_id: str, suite: str, item_ids: list[str], cfg: Config) -> tuple[list[dict], list[dict]]:
    """``objmc`` rows for these items' samples (all seeds), and rejects for items that cannot be scored.

    A seed whose video was scored before under the same identity is not tracked again: its
    stored tracks are scored with the new seeds' (write the rows with ``Workdir.replace``).
    """
    wd = Workdir(workdir_url)
    samples = wd.read("samples")
    samples = samples[(samples["checkpoint_id"] == checkpoint_id) & (samples["suite"] == suite)]
    conds = read_conditions(wd, checkpoint_id, suite, item_ids)
    protocol, identity = protocol_of(cfg), objmc_identity(cfg, suite)
    old_rows = wd.read("objmc")
    old_rows = _of_identity(old_rows[(old_rows["checkpoint_id"] == checkpoint_id) & (old_rows["suite"] == suite)], identity)
    expected = expected_ground_truth(cfg, suite)
    tracker = tracker_for(cfg.evaluate.tracker)
    rules = tracking_rules(protocol)
    digest = cfg.digest()
    rows, rejects = [], []

    def reject(item_id: str, err: BaseException) -> None:
        rejects.append(reject_row(STAGE, f"{checkpoint_id}/{suite}/{item_id}/objmc", err, RESCORE_HINT, digest))

    for item_id in item_ids:
        seeds = samples[samples["item_id"] == item_id].sort_values("seed")
        cond = conds[conds["item_id"] == item_id].set_index("seed")
        if seeds.empty:
            continue
        try:
            if cond.empty:
                raise ItemError("no conditions recorded for its video (generated before the conditions table existed); "
                                "generate it again into a fresh workdir to score it")
            c = cond.iloc[0]
            if not same_ground_truth(c["ground_truth"], expected):
                raise ItemError(f"its video was asked to follow ground truth made as '{c['ground_truth']}', but evaluate.* now "
                                f"makes it as '{expected}'; evaluate with the settings it was generated with (evaluate.protocol, "
                                "evaluate.tracker), or generate into a fresh workdir")
            gt, vis, starts = trajectories_of(c), visible_of(c), starts_of(c)
            item_hw, eval_hw = (int(c["height"]), int(c["width"])), (int(c["eval_height"]), int(c["eval_width"]))
            stored = _stored_scores(old_rows[old_rows["item_id"] == item_id], item_id, gt, list(c["entity_ids"]), vis, item_hw, eval_hw)
            per_seed, tracks, tracked_hw = [], [], None
            for _, s in seeds.iterrows():
                if int(s["seed"]) in stored:
                    score_s, pred, tracked_hw = stored[int(s["seed"])]
                else:
                    frames = read_frames(wd, s["video_path"].replace(".mp4", ".npz"))
                    if protocol.track_at == "eval":  # the official scripts track videos resized to the original size
                        frames = resize_clip(frames, np.zeros(frames.shape[:3], np.int32), eval_hw)[0]
                    score_s, pred = score_video(item_id, frames, gt, list(c["entity_ids"]), vis, gt_hw=item_hw, eval_hw=eval_hw,
                                                tracker=tracker, starts=starts, **rules)
                    tracked_hw = frames.shape[1:3]
                per_seed.append(score_s)
                tracks.append(pred)
        except Exception as err:  # noqa: BLE001 - one item's failure is that item's reject
            if is_infrastructure_error(err):
                raise  # the machine (disk full, out of memory ...), not the item: fail the task
            reject(item_id, err)
            continue
        item = _mean_over_seeds(item_id, per_seed)
        seed_list = [int(x) for x in seeds["seed"]]
        for e in item.entities:
            rows.append(dict(
                checkpoint_id=checkpoint_id, suite=suite, item_id=item_id, entity_id=int(e.entity_id),
                error_px=e.error_px, per_frame=[float(v) for v in e.per_frame], tracker=cfg.evaluate.tracker.kind,
                identity=identity.stored(), seeds=seed_list, tracks=[np.asarray(t[e.entity_id], np.float32).tolist() for t in tracks],
                video_height=int(tracked_hw[0]), video_width=int(tracked_hw[1]),
            ))
    return rows, rejects


def summarize(workdir_url: str, checkpoint_id: str, suite: str, cfg: Config) -> tuple[list[dict], list[dict]]:
    """``metrics`` rows recomputed from every scored item (the current identity's), and rejects for metrics not reported."""
    wd = Workdir(workdir_url)
    ev = cfg.evaluate
    identity = objmc_identity(cfg, suite)
    rows: list[dict] = []
    objmc = wd.read("objmc")
    objmc = _of_identity(objmc[(objmc["checkpoint_id"] == checkpoint_id) & (objmc["suite"] == suite)], identity)
    if not objmc.empty:
        sums = item_sums(objmc)
        ci = studentized_ratio(sums["total"].to_numpy(), sums["count"].to_numpy(), n_boot=ev.bootstrap, confidence=ev.confidence)
        rows.append(dict(
            checkpoint_id=checkpoint_id, suite=suite, metric="objmc", backbone=f"tracker:{ev.tracker.kind}", identity=identity.stored(),
            protocol=ev.protocol, value=float(ci.value), ci_low=float(ci.low), ci_high=float(ci.high), ci_method=ci.method,
            n=len(sums), items_digest=items_digest(sums["item_id"]), replicates=None, created_at=now_utc(),
        ))
    samples = wd.read("samples")
    samples = samples[(samples["checkpoint_id"] == checkpoint_id) & (samples["suite"] == suite)]
    conds = read_conditions(wd, checkpoint_id, suite)
    samples = samples[samples["item_id"].isin(set(conds["item_id"]))]
    rejects = []
    if not samples.empty:
        frechet, why = frechet_metrics(wd, cfg, checkpoint_id, suite, samples, conds)
        rows += frechet
        hint = "generate more items (or longer videos) for this suite, then run `draganything evaluate` again"
        rejects = [reject_row(STAGE, f"{checkpoint_id}/{suite}/{metric}", ItemError(reason), hint, cfg.digest()) for metric, reason in why]
    return rows, rejects


@dataclass
class Pending:
    """What evaluating a checkpoint on a suite has to do."""

    items: list[str]  # every item with a sample
    objmc: list[str]  # items with a video (a seed) not scored under the current identity yet
    features: list[tuple[str, int]]  # videos whose features the metrics need
    up_to_date: bool  # nothing new since the last evaluation: the metrics already hold every scored video


def pending(wd: Workdir, checkpoint_id: str, suite: str, cfg: Config) -> Pending:
    """The work of evaluating a checkpoint on a suite; a ``ValueError`` when it has no samples.

    Pending is by (item, seed): a new item, a new seed of a scored item and a changed identity
    are each scored on the next evaluate. Up to date only when every video is scored and the
    current ObjMC metric was computed from every scored item (so a metric never stays behind).
    """
    samples = wd.read("samples")
    samples = samples[(samples["checkpoint_id"] == checkpoint_id) & (samples["suite"] == suite)]
    if samples.empty:
        raise ValueError(f"no samples of '{checkpoint_id}' on '{suite}' in {wd.url}; run `draganything generate` first")
    identity = objmc_identity(cfg, suite)
    scored = scored_seeds(wd, checkpoint_id, suite, identity)
    videos = samples.groupby("item_id")["seed"].agg(lambda s: {int(x) for x in s})
    items = sorted(videos.index)
    todo = [i for i in items if not videos[i] <= scored.get(i, set())]
    metrics = wd.read("metrics")
    current = _of_identity(metrics[(metrics["checkpoint_id"] == checkpoint_id) & (metrics["suite"] == suite)
                                   & (metrics["metric"] == "objmc")], identity)
    if not todo and len(current) and int(current["n"].iloc[-1]) == len(scored):
        return Pending(items, [], [], True)
    conditions = read_conditions(wd, checkpoint_id, suite)
    return Pending(items, todo, feature_jobs(samples, conditions), False)


def metric_values(wd: Workdir, checkpoint_id: str, suite: str, protocol: str | None = None) -> dict[str, float]:
    """``{"metric[backbone]": value}`` of a checkpoint on a suite (for a run's summary), of one protocol."""
    metrics = wd.read("metrics")
    metrics = metrics[(metrics["checkpoint_id"] == checkpoint_id) & (metrics["suite"] == suite)]
    if protocol is not None:
        metrics = metrics[metrics["protocol"] == protocol]
    return {f"{m.metric}[{m.backbone}]": round(m.value, 4) for m in metrics.itertuples()}


def history_rows(metric_rows: list[dict]) -> list[dict]:
    """The ``metrics_history`` rows of freshly computed metrics (every value a metric ever had)."""
    cols = ("checkpoint_id", "suite", "metric", "backbone", "identity", "value", "ci_low", "ci_high", "n", "created_at")
    return [{k: r[k] for k in cols} for r in metric_rows]


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
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError(f"{path}: the JSON nests too deeply to be a trajectory file {{entity_id: [[x, y], ...]}}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix the file") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected an object {{entity_id: [[x, y], ...]}}, got {type(raw).__name__}")
    traj, vis = {}, {}
    for eid, pts in raw.items():
        p = as_points(pts, f"{path}: entity {eid}")
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

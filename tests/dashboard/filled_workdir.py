"""A filled workdir for the dashboard's tests and its speed suite (benchmarks/dashboard.py): test fixture, not product.

``fill_workdir`` writes checkpoints (a lineage with a branch), train_log, labels,
samples (optionally real H.264 mp4 files: a textured disc following the labelled
trajectory, better checkpoints following it more closely) with their conditions,
objmc (with the measured tracks) and metrics (ObjMC on the LK tracker, FID on two
backbones so the identity filter matters, FVD; with identities, jackknife replicates
and two evaluations of ObjMC so the history shows a change) through ``Workdir``, like
the pipeline's stages do. The rows come from the real writers where the values need not be
measured: checkpoints from ``trained_row`` on a real ``Config``, identities from the
evaluation catalogue; the error values are drawn, not tracked.
"""

from __future__ import annotations

import math

import numpy as np

from core.checkpoints import trained_row
from core.config import load_config
from core.tables import Workdir, now_utc
from eval.catalog import fid_identity, fvd_identity, objmc_identity, protocol_of

FRAMES = 14


def _path(rng: np.random.Generator, H: int, W: int, T: int) -> np.ndarray:
    start = np.array([rng.uniform(0.2, 0.4) * W, rng.uniform(0.3, 0.7) * H])
    end = np.array([rng.uniform(0.6, 0.8) * W, rng.uniform(0.3, 0.7) * H])
    t = np.linspace(0, 1, T)[:, None]
    wave = np.stack([np.zeros(T), np.sin(np.linspace(0, np.pi, T)) * 0.1 * H], axis=1)
    return start + (end - start) * t + wave


def _render(path: np.ndarray, H: int, W: int, radius: float, seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (0, 0), 3)
    tex = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    frames = []
    yy, xx = np.mgrid[0:H, 0:W]
    for cx, cy in path:
        f = bg.copy()
        m = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
        f[m] = (0.5 * tex[m] + 0.5 * np.array([230, 120, 40])).astype(np.uint8)
        frames.append(f)
    return np.stack(frames)


def fill_workdir(
    root: str,
    n_checkpoints: int = 3,
    suites: tuple[str, ...] = ("vipseg-val",),
    n_items: int = 2,
    videos: bool = True,
    size: tuple[int, int] = (96, 128),
    log_steps: int = 20,
    entities: int = 2,
    seed: int = 0,
) -> dict:
    """Fill ``root`` with consistent rows; returns a summary (ids, paths)."""
    wd = Workdir(root)
    rng = np.random.default_rng(seed)
    H, W = size
    now = now_utc()
    ck_ids = [f"ck-{i:03d}" for i in range(n_checkpoints)]
    quality = {c: 1.0 - 0.6 * i / max(n_checkpoints - 1, 1) for i, c in enumerate(ck_ids)}  # later = better

    ck_rows, log_rows = [], []
    for i, c in enumerate(ck_ids):
        parent = None if i == 0 else ck_ids[max(0, i - 1 - (i % 3 == 2))]  # every third branches off
        cfg = load_config("tiny", {"train.lr": 1e-5 * (1 + (i % 2)), "train.steps": 100 * (i + 1)})
        row = trained_row(c, parent, cfg, 100 * (i + 1), f"checkpoints/{c}")
        ck_rows.append({**row, "created_at": now.replace(microsecond=0) - _minutes(n_checkpoints - i)})
        for s in range(log_steps):
            step = 100 * i + s * max(1, 100 // log_steps)
            loss = 0.5 * math.exp(-step / 400) + 0.05 + rng.normal(0, 0.01)
            log_rows.append(dict(checkpoint_id=c, step=step, loss=max(loss, 1e-4), lr=cfg.train.lr, seconds=1.5, samples_per_s=4.0 + rng.normal(0, 0.2)))
    wd.append("checkpoints", ck_rows)
    wd.append("train_log", log_rows)

    items = [f"sample_{k:04d}" for k in range(n_items)]
    label_rows, sample_rows, objmc_rows, metric_rows, cond_rows, history = [], [], [], [], [], []
    evaluated = load_config("tiny")
    paths = {it: _path(rng, H, W, FRAMES) for it in items}
    radius = max(4.0, min(H, W) / 10)
    for it in items:
        for e, eid in enumerate((6001, 6101)):
            p = paths[it] + (e * np.array([0.0, 0.15 * H]))
            label_rows.append(
                dict(
                    dataset="vipseg", split="val", video_id=it, entity_id=eid, category_id=60 + e, category="person" if e == 0 else "cat",
                    is_thing=True, frame_indices=list(range(FRAMES)), centers=p.astype(np.float32).tolist(),
                    radii=[float(radius)] * FRAMES, visible=[True] * FRAMES, area_px=[int(math.pi * radius**2)] * FRAMES,
                    trajectory_source="mask-center", height=H, width=W, orig_height=H, orig_width=W, frames_path=None,
                )
            )
    wd.append("labels", label_rows)

    for bm in suites:
        objmc_id = objmc_identity(evaluated, bm).stored()
        for c in ck_ids:
            errs = []
            for k, it in enumerate(items):
                rel = f"samples/{c}/{bm}/{it}.mp4"
                sample_rows.append(dict(checkpoint_id=c, suite=bm, item_id=it, seed=0, video_path=rel, frames=FRAMES, height=H, width=W, seconds=2.0))
                targets = [paths[it] + (e * np.array([0.0, 0.15 * H])) for e in range(entities)]
                cond_rows.append(dict(
                    checkpoint_id=c, suite=bm, item_id=it, seed=0, entity_ids=[6001, 6101][:entities],
                    trajectories=[t.astype(np.float32).tolist() for t in targets], visible=[[True] * FRAMES] * entities,
                    starts=[t[0].astype(np.float32).tolist() for t in targets], radii=[float(radius)] * entities, frames=FRAMES,
                    height=H, width=W, eval_height=H, eval_width=W, inputs_path=None, reference=None,
                    ground_truth="project: synthetic", protocol="project", notes=["synthetic row"], created_at=now,
                ))
                drift = quality[c] * rng.uniform(4, 12)
                off = np.linspace(0, 1, FRAMES)[:, None] * np.array([drift, -drift / 2])
                if videos:
                    frames = _render(paths[it] + off, H, W, radius, seed=k)
                    from core.media import write_mp4

                    write_mp4(wd, rel, frames, fps=7)
                for e, eid in enumerate((6001, 6101)[:entities]):
                    per = np.abs(np.linspace(0, drift, FRAMES) + rng.normal(0, 0.3, FRAMES))
                    objmc_rows.append(dict(
                        checkpoint_id=c, suite=bm, item_id=it, entity_id=eid, error_px=float(per.mean()), per_frame=per.tolist(), tracker="lk",
                        identity=objmc_id, seeds=[0], tracks=[(targets[e] + off).astype(np.float32).tolist()], video_height=H, video_width=W,
                    ))
                    errs.append(float(per.mean()))
            errs_a = np.array(errs)
            mean = float(errs_a.mean())
            half = float(1.96 * errs_a.std(ddof=1) / math.sqrt(len(errs_a))) if len(errs_a) > 1 else 0.0
            q = quality[c]
            for metric, backbone, value, h in (
                ("objmc", "tracker:lk", mean, half),
                ("fid", "inception-2015-12-05", 30 + 20 * q + rng.normal(0, 1), 2.0),
                ("fid", "fixed-seed-tiny", 80 + 40 * q + rng.normal(0, 2), 4.0),
                ("fvd", "i3d-kinetics400", 450 + 150 * q + rng.normal(0, 5), 20.0),
            ):
                if backbone == "fixed-seed-tiny" and c == ck_ids[-1]:
                    continue  # not every checkpoint has every backbone
                protocol = protocol_of(evaluated)
                identity = (objmc_id if metric == "objmc" else fid_identity(protocol, backbone, (256, 256)).stored() if metric == "fid"
                            else fvd_identity(protocol, backbone, (256, 256), FRAMES).stored())
                reps = None if metric == "objmc" else (value + h / 4 + rng.normal(0, h / 8, len(items))).tolist()
                row = dict(
                    checkpoint_id=c, suite=bm, metric=metric, backbone=backbone, identity=identity, protocol="project",
                    value=float(value), ci_low=float(value - h), ci_high=float(value + h),
                    ci_method="studentised bootstrap over items (bootstrap-t)" if metric == "objmc" else "grouped jackknife over items (bias-corrected, t interval)",
                    n=len(items), items_digest="synthetic", replicates=reps, created_at=now,
                )
                metric_rows.append(row)
                if metric == "objmc":  # an earlier evaluation on fewer items: the history shows the change
                    history.append({k: row[k] for k in ("checkpoint_id", "suite", "metric", "backbone", "identity", "ci_low", "ci_high")}
                                   | dict(value=float(value) * 0.8, n=max(1, len(items) - 1), created_at=now - _minutes(30)))
                history.append({k: row[k] for k in ("checkpoint_id", "suite", "metric", "backbone", "identity", "value", "ci_low", "ci_high", "n", "created_at")})
    wd.append("conditions", cond_rows)
    wd.append("samples", sample_rows)
    wd.append("objmc", objmc_rows)
    wd.append("metrics", metric_rows)
    wd.append("metrics_history", history)
    return {"checkpoints": ck_ids, "items": items, "suites": list(suites), "root": root}


def _minutes(n: int):
    import datetime as dt

    return dt.timedelta(minutes=n)

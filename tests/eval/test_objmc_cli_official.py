"""`draganything evaluate objmc --gt --pred` equals the official flat-mean formula on official-format folders."""

import json
import math
import subprocess
import sys

import numpy as np


def official_flat_mean(gt_dir, pred_dir) -> float:
    """The official ObjMC script's formula: for every ground-truth file present in both folders,
    every entity of the ground truth, every zipped (gt, pred) point pair: the Euclidean
    distance; one mean over all of them."""
    import os

    dists = []
    for name in sorted(set(os.listdir(gt_dir)) & set(os.listdir(pred_dir))):
        gt = json.loads((gt_dir / name).read_text())
        pred = json.loads((pred_dir / name).read_text())
        for key, points in gt.items():
            for (x1, y1), (x2, y2) in zip(points, pred[key]):
                dists.append(math.sqrt((x2 - x1) ** 2 + (y2 - y1) ** 2))
    return sum(dists) / len(dists)


def _folders(tmp_path, seed=0):
    """Official-format files: int points, tracker points off the frame (negative, beyond 320 x 240), uneven lengths."""
    rng = np.random.default_rng(seed)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    for v in range(6):
        gt, pred = {}, {}
        for e in rng.choice([0, 1, 7, 12, 105, 5301], size=rng.integers(1, 5), replace=False):
            L = 14
            walk = np.cumsum(rng.normal(0, 25, (L, 2)), axis=0) + rng.uniform(-40, 360, 2)  # leaves the frame
            gt[str(e)] = np.trunc(walk).astype(int).tolist()
            noisy = walk + rng.normal(0, 9, walk.shape)
            pred[str(e)] = np.trunc(noisy[: L - int(rng.integers(0, 3))]).astype(int).tolist()  # sometimes shorter
        (gt_dir / f"video{v:02d}.json").write_text(json.dumps(gt))
        (pred_dir / f"video{v:02d}.json").write_text(json.dumps(pred))
    (gt_dir / "only_in_gt.json").write_text(json.dumps({"1": [[0, 0]]}))  # skipped by both
    return gt_dir, pred_dir


def test_cli_equals_the_official_formula_with_off_frame_points(tmp_path):
    gt_dir, pred_dir = _folders(tmp_path)
    pts = [p for f in gt_dir.glob("video*.json") for traj in json.loads(f.read_text()).values() for p in traj]
    assert min(min(p) for p in pts) < 0 and max(p[0] for p in pts) > 320  # the case the issue names
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "evaluate", "objmc", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert abs(got["objmc"] - official_flat_mean(gt_dir, pred_dir)) < 1e-6
    assert got["missing_items"] == ["only_in_gt"]


def test_json_lists_the_predictions_it_could_not_score_and_is_strict_json(tmp_path):
    from tasks.evaluate import score_dirs

    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    (gt_dir / "v.json").write_text(json.dumps({"1": [[0, 0], [1, 1], [2, 2]], "2": [[5, 5], [5, 5]]}))
    # a null point and a NaN point in entity 1 (json writes NaN as the non-standard literal)
    (pred_dir / "v.json").write_text('{"1": [[0, 0], null, [NaN, 2]], "2": [[5, 6], [5, 6], [5, 6]]}')
    summary = score_dirs(gt_dir, pred_dir).summary()
    text = json.dumps(summary, allow_nan=False)  # strict JSON: raises on NaN / inf
    got = json.loads(text)
    assert got["excluded_predictions"] == {"v/1": 2}
    assert got["unmatched_frames"] == {"v/2": 1}
    assert got["n_pairs"] == 1 + 2 and got["objmc"] == 2 / 3

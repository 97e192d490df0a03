"""The paper's Table 3 (ablation of the entity representation) in miniature, on the tiny profile.

Same shipped base, same sample data (what ``make demo`` writes), the same training budget
for every row, ``--seeds`` training seeds each:

    none | gaussian | entity | entity+gaussian (loss mask off, the tiny profile) | entity+gaussian, loss mask on

Each run trains a controller from scratch with the project's own training code, generates
the ``sample`` suite with the generate stage's code and scores it with the evaluate
stage's (ObjMC with LK, FID and FVD on the fallback backbones). Every row is compared with
``none`` by a paired bootstrap over (item, seed) units: one draw of units resamples both
rows, so the interval is for the difference on the same videos' first frames and paths.

    .venv/bin/python benchmarks/ablation.py [--workdir runs/ablation] [--steps 200] [--seeds 0 1 2] [--write-readme]

It writes the sample data and labels into the workdir when they are missing, keeps every
run's checkpoints and videos there (a re-run skips what exists), prints the table, and with
``--write-readme`` puts it into benchmarks/README.md between the ablation markers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROWS = [  # (label, conditioning, loss mask)
    ("none", "none", False),
    ("gaussian", "gaussian", False),
    ("entity", "entity", False),
    ("entity+gaussian", "entity+gaussian", False),
    ("entity+gaussian, loss mask on", "entity+gaussian", True),
]
SUITE = "sample"
MARK_BEGIN, MARK_END = "<!-- ablation:begin -->", "<!-- ablation:end -->"
PAPER = {"none": (410.7, 34.2, 496.3), "gaussian": (339.3, 34.0, 495.3), "entity": (318.4, 34.1, 494.5),
         "entity+gaussian": (305.7, 33.5, 494.8), "entity+gaussian, loss mask on": (305.7, 33.5, 494.8)}
PAPER_MASK_OFF = (311.1, 34.3, 500.2)


def prepare(workdir: Path, log) -> None:
    """The demo's sample data and labels (train + val) in ``workdir``, unless they are there."""
    from core.config import load_config
    from core.tables import Workdir

    wd = Workdir(str(workdir))
    if not wd.read("labels").empty:
        return
    data = workdir / "data"
    make = (ROOT / "Makefile").read_text()
    args = next(line for line in make.splitlines() if "sample-data" in line).split("sample-data", 1)[1]
    args = args.replace("--out $(DEMO)/data", f"--out {data}")
    subprocess.run([sys.executable, "-m", "flows.cli", "sample-data", *args.split()], check=True, cwd=ROOT)
    from core.vipseg import load_categories, read_split
    from tasks.labels import VideoRef, label_videos

    cfg = load_config("tiny")
    for split in ("train", "val"):
        refs = [VideoRef("sample", split, v) for v in read_split(data, split)]
        rows, rejects = label_videos(str(data), refs, cfg.labels, load_categories(data), str(workdir))
        wd.append("labels", rows)
        wd.append("rejects", rejects)
    log(f"sample data and labels written to {workdir}")


def run_row(workdir: Path, conditioning: str, mask: bool, seed: int, steps: int, log) -> str:
    """Train one controller (or find it trained), generate and score the suite; returns its checkpoint id."""
    from core.checkpoints import resolve
    from core.config import load_config
    from core.tables import Workdir
    from tasks import evaluate as ev
    from tasks import features as ft
    from tasks import generate as gen
    from tasks.train import run_training

    cfg = load_config("tiny", {"model.conditioning": conditioning, "train.loss_mask": mask, "train.seed": seed,
                               "train.steps": steps, "train.checkpoint_every": steps})
    wd = Workdir(str(workdir))
    t0 = time.perf_counter()
    out = run_training(str(workdir), cfg, progress=False)
    cid = out["latest"]
    trained = time.perf_counter() - t0
    row = resolve(wd, cid)
    items, _ = gen.load_suite(wd, SUITE, cfg)
    ids = [i.item_id for i in items]
    t1 = time.perf_counter()
    samples, conditions, rejects = gen.generate_items(str(workdir), row, SUITE, ids, cfg)
    wd.append("conditions", conditions)  # before the samples, as the generate stage writes them
    wd.append("samples", samples)
    wd.append("rejects", rejects)
    scored = {(c, b, i) for c, b, i, *_ in wd.keys("objmc")}
    todo = [i for i in ids if (cid, SUITE, i) not in scored]
    if todo:
        rows, rejects = ev.objmc_items(str(workdir), cid, SUITE, todo, cfg)
        wd.append("objmc", rows)
        wd.append("rejects", rejects)
    s = wd.read("samples")
    s = s[(s["checkpoint_id"] == cid) & (s["suite"] == SUITE)]
    c = wd.read("conditions")
    ft.cache_features(str(workdir), ft.feature_jobs(s, c[(c["checkpoint_id"] == cid) & (c["suite"] == SUITE)]), SUITE, cfg)
    log(f"{conditioning:16s} mask={mask!s:5s} seed {seed}: {cid} trained {out['trained_steps']} steps in {trained:.0f}s, "
        f"generated + scored in {time.perf_counter() - t1:.0f}s")
    return cid


def unit_stats(workdir: Path, cid: str, cfg) -> dict:
    """Per item: ObjMC (summed error, counted pairs), FID frame features, FVD clip features, and the real clip's."""
    from core.tables import Workdir
    from tasks import features as ft
    from tasks import generate as gen

    wd = Workdir(str(workdir))
    objmc = wd.read("objmc")
    objmc = objmc[(objmc["checkpoint_id"] == cid) & (objmc["suite"] == SUITE)]
    per = objmc.groupby("item_id")["per_frame"].apply(lambda s: np.concatenate([np.asarray(x, float) for x in s]))
    samples = wd.read("samples")
    samples = samples[(samples["checkpoint_id"] == cid) & (samples["suite"] == SUITE) & (samples["seed"] == 0)]
    items = {i.item_id: i for i in gen.load_suite(wd, SUITE, cfg)[0]}
    out = {}
    for s in samples.itertuples():
        it = items[s.item_id]
        L = it.trajectories.shape[1]
        ff, cf = ft.features_of(wd, cfg, s.video_path.replace(".mp4", ".npz"), L, SUITE)
        rf, rc = ft.features_of(wd, cfg, it.reference, L, SUITE)
        e = per[s.item_id]
        out[s.item_id] = dict(num=float(np.nansum(e)), den=float(np.isfinite(e).sum()), ff=ff, cf=cf, rf=rf, rc=rc)
    return out


def paired_frechet(a: list, b: list, real: list, n_boot: int, seed: int = 0) -> tuple[float, float, float, float, float]:
    """(FD(a), FD(b), FD(a) - FD(b), low, high): each unit's features of ``a``, ``b`` and its real video
    resampled together (the same draw for both rows and the reference)."""
    from eval.bootstrap import ItemFeatures, percentile_interval, resample_counts

    A, B, R = ItemFeatures(a), ItemFeatures(b), ItemFeatures(real)
    fa, fb = A.stats().frechet(R.stats()), B.stats().frechet(R.stats())
    counts = resample_counts(len(a), n_boot, seed)
    d = []
    for w in counts:
        r = R.stats(w)
        d.append(A.stats(w).frechet(r) - B.stats(w).frechet(r))
    lo, hi = percentile_interval(np.array(d))
    return fa, fb, fa - fb, lo, hi


def table(workdir: Path, runs: dict, seeds: list[int], n_boot: int, n_boot_frechet: int) -> tuple[str, dict]:
    from core.config import load_config
    from eval.bootstrap import paired_ratio_difference

    cfg = load_config("tiny")
    stats = {key: [unit_stats(workdir, cid, cfg) for cid in cids] for key, cids in runs.items()}
    units = sorted(set.intersection(*[set(s) for per_seed in stats.values() for s in per_seed]))

    def flat(key, field):
        return [stats[key][k][u][field] for k in range(len(seeds)) for u in units]

    base = "none"
    lines = [
        "| conditioning | ObjMC px (LK) | vs none | FID (fallback-frame-v1) | vs none | FVD (fallback-clip-v1) | vs none | ObjMC per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    result = {}
    nb, db = np.array(flat(base, "num")), np.array(flat(base, "den"))
    for key in runs:
        na, da = np.array(flat(key, "num")), np.array(flat(key, "den"))
        obj = na.sum() / da.sum()
        per_seed = [sum(stats[key][k][u]["num"] for u in units) / sum(stats[key][k][u]["den"] for u in units) for k in range(len(seeds))]
        fid = paired_frechet(flat(key, "ff"), flat(base, "ff"), flat(key, "rf"), n_boot_frechet)
        fvd = paired_frechet(flat(key, "cf"), flat(base, "cf"), flat(key, "rc"), n_boot_frechet)
        if key == base:
            cells = [f"{obj:.2f}", "–", f"{fid[0]:.3f}", "–", f"{fvd[0]:.4f}", "–"]
        else:
            d = paired_ratio_difference(na, da, nb, db, n_boot=n_boot)
            cells = [f"{obj:.2f}", f"{d.value:+.2f} [{d.low:+.2f}, {d.high:+.2f}]", f"{fid[0]:.3f}",
                     f"{fid[2]:+.3f} [{fid[3]:+.3f}, {fid[4]:+.3f}]", f"{fvd[0]:.4f}", f"{fvd[2]:+.4f} [{fvd[3]:+.4f}, {fvd[4]:+.4f}]"]
            result[key + ":objmc_diff"] = (d.value, d.low, d.high)
        result[key] = dict(objmc=obj, fid=fid[0], fvd=fvd[0], per_seed=per_seed)
        lines.append(f"| {key} | " + " | ".join(cells) + " | " + " / ".join(f"{v:.2f}" for v in per_seed) + " |")
    return "\n".join(lines), dict(result, units=len(units) * len(seeds))


def verdict(result: dict) -> str:
    o = {k: result[k]["objmc"] for k in ("none", "gaussian", "entity", "entity+gaussian")}
    order = sorted(o, key=o.get, reverse=True)
    paper = ["none", "gaussian", "entity", "entity+gaussian"]
    sig = {k: result[f"{k}:objmc_diff"][2] < 0 for k in ("gaussian", "entity", "entity+gaussian")}
    text = (f"ObjMC from worst to best: {' > '.join(f'{k} ({o[k]:.2f})' for k in order)}. "
            f"The paper's ordering (none > gaussian > entity > entity+gaussian) "
            f"{'holds' if order == paper else 'does not hold'} here. "
            + "Better than none with the paired interval below 0: "
            + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in sig.items()) + ".")
    m_on, m_off = result["entity+gaussian, loss mask on"]["objmc"], result["entity+gaussian"]["objmc"]
    text += f" Loss mask on: {m_on:.2f} against {m_off:.2f} off."
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "ablation"))
    ap.add_argument("--steps", type=int, default=200, help="training steps of every run (200: the 15 runs take about half an hour on 2 cores)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--n-boot-frechet", type=int, default=200)
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.0f}s] {msg}", flush=True)

    prepare(workdir, log)
    runs = {label: [run_row(workdir, cond, mask, s, args.steps, log) for s in args.seeds] for label, cond, mask in ROWS}
    text, result = table(workdir, runs, args.seeds, args.n_boot, args.n_boot_frechet)
    minutes = (time.perf_counter() - t0) / 60
    load = open("/proc/loadavg").read().split()[:3]
    summary = verdict(result)
    block = "\n".join([
        MARK_BEGIN,
        f"Measured {time.strftime('%Y-%m-%d')} with `benchmarks/ablation.py --steps {args.steps} --seeds {' '.join(map(str, args.seeds))}`: "
        f"{args.steps} training steps per run, {len(args.seeds)} seeds, {result['units']} (item, seed) units per row, "
        f"{minutes:.0f} min in all on 2 cores (load average at the end {', '.join(load)}). "
        "Differences are row minus `none` (lower is better) with 95% paired bootstrap intervals over (item, seed) units.",
        "",
        text,
        "",
        summary,
        MARK_END,
    ])
    print(block)
    (workdir / "ablation.json").write_text(json.dumps({"runs": runs, "result": result, "minutes": minutes}, indent=1, default=str))
    if args.write_readme:
        readme = ROOT / "benchmarks" / "README.md"
        body = readme.read_text()
        if MARK_BEGIN in body:
            a, rest = body.split(MARK_BEGIN, 1)
            body = a + block + rest.split(MARK_END, 1)[1]
        else:
            body = body.rstrip() + "\n\n## Ablation (the paper's Table 3 in miniature)\n\n" + block + "\n"
        readme.write_text(body)


if __name__ == "__main__":
    main()

"""The run's verdicts (paired ObjMC against the current best), `report` and `status --fail-on-regression`:
every verdict is between numbers of one identity, and each identity gets its own, labelled."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.checkpoints import control_off_row, trained_row
from core.config import load_config
from core.tables import Workdir
from eval.catalog import labelled, objmc_identity
from tasks.evaluate import summarize
from tasks.verdicts import BETTER, SAME, WORSE, compare_to_best, control_effects, current_best, newest_verdicts, objmc_scores, run_report

REPO = Path(__file__).resolve().parents[2]
ITEMS = [f"sample_{i:04d}" for i in range(12)]
BASE = np.random.default_rng(0).uniform(4.0, 12.0, size=(len(ITEMS), 2, 8))  # item x entity x frame errors (px)
CFG = {"project": load_config("tiny"), "official": load_config("tiny", {"evaluate.protocol": "official"}),
       "wide-lk": load_config("tiny", {"evaluate.tracker.lk.win_size": 21})}


def add_checkpoint(wd: Workdir, cid: str, step: int) -> dict:
    row = trained_row(cid, None, CFG["project"], step, f"checkpoints/{cid}")
    wd.append("checkpoints", [row])
    return row


def score(wd: Workdir, cid: str, how: str, shift: float = 0.0, noise: float = 0.0, scale: float = 1.0, seed: int = 1) -> None:
    """ObjMC rows of ``cid`` on 12 items under the identity ``how``'s config makes (the base errors moved by
    ``shift`` px plus noise, times ``scale``), then its metric row from the evaluate stage's own ``summarize``."""
    cfg = CFG[how]
    ident = objmc_identity(cfg, "sample").stored()
    err = (BASE + shift + np.random.default_rng(seed).normal(0, noise, BASE.shape)) * scale
    wd.append("objmc", [dict(checkpoint_id=cid, suite="sample", item_id=item, entity_id=e, error_px=float(err[i, e].mean()),
                             per_frame=err[i, e].tolist(), tracker="lk", identity=ident, seeds=[0])
                        for i, item in enumerate(ITEMS) for e in range(2)])
    rows, _ = summarize(str(wd.root), cid, "sample", cfg)
    wd.replace("metrics", rows)


def test_verdicts_against_the_current_best(tmp_path):
    wd = Workdir(tmp_path)
    for k, (shift, noise) in enumerate([(0.0, 0.0), (0.8, 0.1), (0.0, 0.05), (-0.8, 0.1)]):
        add_checkpoint(wd, f"run-a-s{k + 1:03d}00", k + 1)
        score(wd, f"run-a-s{k + 1:03d}00", "project", shift, noise)
    (scores,) = objmc_scores(wd, "sample").values()
    ids = {f"run-a-s{k}00" for k in ("001", "002", "003", "004")}
    assert current_best(scores, ids) == "run-a-s00400"
    assert current_best(scores, ids, leave_out="run-a-s00400") in {"run-a-s00100", "run-a-s00300"}
    found = {v["checkpoint"]: v for v in compare_to_best(wd, "sample", ["run-a-s00200", "run-a-s00300", "run-a-s00400"])}
    assert found["run-a-s00200"]["verdict"] == WORSE and found["run-a-s00200"]["best"] == "run-a-s00400"
    assert found["run-a-s00300"]["verdict"] == WORSE  # 0.8 px behind the best, on every item
    assert found["run-a-s00400"]["verdict"] == BETTER and found["run-a-s00400"]["items"] == 12
    markdown, verdicts = run_report(wd, ["sample"], {"sample": ["run-a-s00400"]})
    assert "`run-a-s00400` is **better**" in markdown and "| checkpoint | step |" in markdown and len(verdicts) == 1


def test_a_jittered_copy_of_the_best_is_indistinguishable(tmp_path):
    wd = Workdir(tmp_path)
    add_checkpoint(wd, "run-b-s000100", 1)
    score(wd, "run-b-s000100", "project")
    add_checkpoint(wd, "run-b-s000200", 2)
    score(wd, "run-b-s000200", "project", noise=0.5)
    (v,) = newest_verdicts(wd, "sample")
    assert v["verdict"] == SAME


def _status(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "status", "-w", str(workdir), "--fail-on-regression"], cwd=REPO,
                          capture_output=True, text=True, timeout=180)


# The mixed workdir: three checkpoints and a control-off copy scored under `project`, the same
# checkpoints under `official` (other errors, smaller: the newest is the best there), and a third
# identity (LK with a wider window) holding one checkpoint's rows with tripled errors.
SCORES = {
    "project": [("s100", 0.0, 0.0), ("s200", -0.5, 0.1), ("s300", 1.0, 0.1), ("s300~nocontrol", 4.0, 0.5)],
    "official": [("s100", -3.0, 0.0), ("s200", -3.0, 0.3), ("s300", -3.6, 0.1)],
    "wide-lk": [("s300", 1.0, 0.1)],
}


def _workdir(root: Path, identities: list[str]) -> Workdir:
    wd = Workdir(root)
    rows = {c: add_checkpoint(wd, c, k) for k, c in enumerate(("s100", "s200", "s300"), 1)}
    wd.append("checkpoints", [control_off_row(rows["s300"])])
    for how in identities:
        for cid, shift, noise in SCORES[how]:
            score(wd, cid, how, shift, noise, scale=3.0 if how == "wide-lk" else 1.0, seed=len(cid))
    return wd


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    """The mixed workdir and, per identity, a workdir holding only that identity's rows."""
    root = tmp_path_factory.mktemp("verdicts")
    single = {how: _workdir(root / how, [how]) for how in SCORES}
    return _workdir(root / "mixed", list(SCORES)), single


def _by_identity(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["identity"], []).append(r)
    return out


def test_a_workdir_scored_under_three_identities_gives_each_identity_its_own_verdict(workdirs):
    mixed, single = workdirs
    labels = {how: objmc_identity(CFG[how], "sample").label for how in SCORES}
    # the run's verdicts, the report's control-off effect and the status gate's newest verdicts: per identity, as alone
    got, alone = _by_identity(compare_to_best(mixed, "sample", ["s100", "s200", "s300"])), {}
    for wd in single.values():
        alone.update(_by_identity(compare_to_best(wd, "sample", ["s100", "s200", "s300"])))
    assert got == alone and set(got) == set(labels.values())
    assert {v["checkpoint"]: v["verdict"] for v in got[labels["project"]]}["s300"] == WORSE
    assert {v["checkpoint"]: v["verdict"] for v in got[labels["official"]]}["s300"] == BETTER
    assert [v["best"] for v in got[labels["wide-lk"]]] == [None]  # alone under its identity: no verdict
    assert _by_identity(newest_verdicts(mixed, "sample")) == {k: v for wd in single.values() for k, v in _by_identity(newest_verdicts(wd, "sample")).items()}
    (effect,) = control_effects(mixed, "sample")
    assert effect == control_effects(single["project"], "sample")[0] and effect["identity"] == labels["project"]
    # the run artifact's markdown: every identity's verdict, labelled, and nothing else
    markdown, verdicts = run_report(mixed, ["sample"], {"sample": ["s300"]})
    assert len(verdicts) == 3 and _by_identity(verdicts) == {k: [v for v in vs if v["checkpoint"] == "s300"] for k, vs in alone.items()}
    for how in SCORES:
        line = next(x for x in run_report(single[how], ["sample"], {"sample": ["s300"]})[0].splitlines() if "`s300`" in x and x.startswith("- "))
        assert line in markdown and labels[how] in line
    assert "protocol: **official**" in markdown and "protocol: **project**" in markdown


def test_status_fails_on_a_regression_under_one_identity_and_names_it(workdirs):
    mixed, single = workdirs
    assert _status(Path(single["official"].root)).returncode == 0  # official alone: the newest is the best
    bad = _status(Path(mixed.root))
    assert bad.returncode == 1, bad.stderr
    label = objmc_identity(CFG["project"], "sample").label
    assert "regression" in bad.stderr and f"[{label}] `s300` is **worse** than the best, `s200`" in bad.stderr
    assert "official" not in bad.stderr.split("regression", 1)[1]  # not the official verdict, which is better


def test_the_leaderboard_and_compare_pages_rank_and_compare_within_one_identity(workdirs):
    from dashboard import data

    mixed, single = workdirs
    for how, alone in single.items():
        label = objmc_identity(CFG[how], "sample").label

        def tables(wd, label=label):
            metrics, objmc = labelled(wd.read("metrics")), labelled(wd.read("objmc"), "objmc")
            board = data.leaderboard(metrics, wd.read("checkpoints"), "sample", {"objmc": label}, objmc=objmc)
            deltas = data.metric_deltas(metrics, "sample", "s100", "s300", objmc)
            return board.drop(columns=["created_at"]), deltas[deltas["identity"] == label].reset_index(drop=True) if len(deltas) else deltas

        (board, deltas), (board1, deltas1) = tables(mixed), tables(alone)
        pd.testing.assert_frame_equal(board, board1)
        if how == "wide-lk":  # s100 was never scored under it: nothing to compare, and no other identity's delta shown
            assert deltas.empty and deltas1.empty
            continue
        pd.testing.assert_frame_equal(deltas, deltas1)
        assert len(deltas1) == 1 and deltas1["identity"].iloc[0] == label

"""What the next `evaluate` scores: pending is by (item, seed), so a new seed, a new item and a changed
identity are scored, and a video scored once is never tracked again."""

from collections import Counter

import numpy as np
import pytest

from core.checkpoints import resolve
from core.config import load_config
from core.tables import Workdir
from eval.objmc import score_video
from flows.evaluate import metrics_task, objmc_chunk
from tasks.evaluate import pending
from tasks.generate import generate_items, pending_items
from tests.study_cases import write_cases as _cases

SUITE = "user-study"




def _generate_and_evaluate(wd: Workdir, cfg) -> list[str]:
    """The generate stage's rows, then the evaluate flow's own task functions (the flow without Ray); the items it scored."""
    todo, _ = pending_items(wd, "warp", SUITE, cfg)
    samples, conditions, _ = generate_items(str(wd.root), resolve(wd, "warp"), SUITE, todo, cfg)
    wd.append("conditions", conditions)
    wd.append("samples", samples)
    work = pending(wd, "warp", SUITE, cfg)
    if not work.up_to_date:
        objmc_chunk.fn(str(wd.root), "warp", SUITE, work.objmc, cfg)
        metrics_task.fn(str(wd.root), "warp", SUITE, cfg)
    return work.objmc


def _objmc_metric(wd: Workdir) -> dict:
    m = wd.read("metrics")
    return m[m["metric"] == "objmc"].set_index("identity").iloc[0].to_dict()


def test_a_new_seed_and_a_new_item_are_scored_and_nothing_scored_is_tracked_again(tmp_path, monkeypatch):
    import tasks.evaluate

    tracked = Counter()  # the videos the evaluate stage tracks (the real function, counted)

    def counted(item_id, *args, **kwargs):
        tracked[item_id] += 1
        return score_video(item_id, *args, **kwargs)

    monkeypatch.setattr(tasks.evaluate, "score_video", counted)
    cases = tmp_path / "cases"
    _cases(cases, ["case00", "case01", "case02"])
    wd = Workdir(tmp_path / "work")
    one_seed = load_config("tiny", {"evaluate.user_study_dir": str(cases), "generate.seeds": [0]})
    assert _generate_and_evaluate(wd, one_seed) == ["case00", "case01", "case02"]
    first = _objmc_metric(wd)
    assert tracked == {"case00": 1, "case01": 1, "case02": 1}
    assert first["n"] == 3 and pending(wd, "warp", SUITE, one_seed).up_to_date
    before = wd.read("objmc").set_index(["item_id", "entity_id"])

    # A second seed for every case, and a new case: exactly those five videos are tracked.
    _cases(cases, ["case00", "case01", "case02", "case03"])
    two_seeds = load_config("tiny", {"evaluate.user_study_dir": str(cases), "generate.seeds": [0, 1]})
    tracked.clear()
    assert _generate_and_evaluate(wd, two_seeds) == ["case00", "case01", "case02", "case03"]
    assert tracked == {"case00": 1, "case01": 1, "case02": 1, "case03": 2}

    after = wd.read("objmc").set_index(["item_id", "entity_id"])
    assert len(after) == 4 and all(list(s) == [0, 1] for s in after["seeds"])  # every video, each item once
    for key, old in before.iterrows():  # the seed-0 tracks are the stored ones
        new = after.loc[key]
        np.testing.assert_array_equal(np.asarray([list(p) for p in new["tracks"][0]]), np.asarray([list(p) for p in old["tracks"][0]]))
    per = np.concatenate([np.asarray(p, float) for p in after["per_frame"]])
    metric = _objmc_metric(wd)
    assert metric["n"] == 4 and metric["value"] == pytest.approx(np.nansum(per) / np.isfinite(per).sum(), abs=1e-9)
    assert metric["value"] != pytest.approx(first["value"])
    tracked.clear()
    assert _generate_and_evaluate(wd, two_seeds) == [] and pending(wd, "warp", SUITE, two_seeds).up_to_date  # nothing new: nothing scored
    assert not tracked

    # A changed identity (another tracker window) is scored anew, beside the old identity's rows.
    wider = load_config("tiny", {"evaluate.user_study_dir": str(cases), "generate.seeds": [0, 1], "evaluate.tracker.lk.win_size": 21})
    assert pending(wd, "warp", SUITE, wider).objmc == ["case00", "case01", "case02", "case03"]

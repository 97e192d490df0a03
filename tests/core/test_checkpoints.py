"""core/checkpoints.py: one row builder, one run id, kinds (and old rows classified on read), the queries."""

import json

import pytest

from core import checkpoints as ck
from core.config import load_config
from core.tables import Workdir, now_utc


def _trained(wd, cid, step, cfg):
    row = ck.trained_row(cid, None, cfg, step, f"checkpoints/{cid}")
    wd.append("checkpoints", [row])
    return row


def test_rows_have_their_kind_and_references_and_control_off_register_themselves(tmp_path):
    wd, cfg = Workdir(tmp_path), load_config("tiny")
    _trained(wd, "run-a-s000000", 0, cfg)
    _trained(wd, "run-a-s000500", 500, cfg)
    assert ck.resolve(wd, "warp")["kind"] == ck.REFERENCE
    off = ck.resolve(wd, "run-a-s000500~nocontrol")
    assert off["kind"] == ck.CONTROL_OFF and off["parent"] == "run-a-s000500" and off["step"] == 500
    assert json.loads(off["config"])["model"]["conditioning_scale"] == 0.0 and off["path"] == "checkpoints/run-a-s000500"
    assert [r["checkpoint_id"] for r in ck.trained(wd)] == ["run-a-s000000", "run-a-s000500"]
    # the untrained step-0 controller is not generated when the latest's control-off baseline is: the same videos
    assert ck.to_evaluate(wd, "sample", "all", references=True) == ["static", "warp", "run-a-s000500", "run-a-s000500~nocontrol"]
    assert ck.to_evaluate(wd, "sample", "all", references=False, baselines=False) == ["run-a-s000000", "run-a-s000500"]
    assert ck.to_evaluate(wd, "sample", "latest", references=False) == ["run-a-s000500", "run-a-s000500~nocontrol"]
    with pytest.raises(ck.UnknownCheckpoint, match="train one"):
        ck.resolve(wd, "nope")
    with pytest.raises(ValueError, match="kind"):
        ck.checkpoint_row("x", "finetuned", "{}", "h", 0)


def test_rows_written_before_the_kind_column_are_classified_on_read(tmp_path):
    wd, cfg = Workdir(tmp_path), load_config("tiny")
    old = [  # as the stages wrote them: no kind
        dict(checkpoint_id="run-b-s000010", parent=None, config=json.dumps(cfg.model_dump(mode="json")), config_hash="h", step=10,
             path="checkpoints/run-b-s000010", created_at=now_utc()),
        dict(checkpoint_id="static", parent=None, config=json.dumps({"generator": "static"}), config_hash="static", step=0, path=None,
             created_at=now_utc()),
        dict(checkpoint_id="renamed-warp", parent=None, config=json.dumps({"generator": "warp"}), config_hash="w", step=0, path=None,
             created_at=now_utc()),
        dict(checkpoint_id="run-b-s000010~nocontrol", parent="run-b-s000010", config="{}", config_hash="h~nocontrol", step=10,
             path="checkpoints/run-b-s000010", created_at=now_utc()),
    ]
    wd.append("checkpoints", old)
    assert wd.read("checkpoints")["kind"].isna().all()
    kinds = dict(zip(*[ck.read(wd)[c] for c in ("checkpoint_id", "kind")]))
    assert kinds == {"run-b-s000010": "trained", "static": "reference", "renamed-warp": "reference", "run-b-s000010~nocontrol": "control-off"}
    assert [r["checkpoint_id"] for r in ck.trained(wd)] == ["run-b-s000010"]
    assert ck.trained(wd, with_weights=True) == []  # no weights on disk
    assert ck.kind(old[2]) == "reference" and ck.kind({**old[0], "kind": None}) == "trained"


def test_one_run_id_from_the_config_without_its_length_and_the_origin():
    cfg = load_config("tiny")
    longer = load_config("tiny", ["train.steps=5000"])
    other = load_config("tiny", ["train.lr=0.5"])
    assert ck.run_id(cfg, None) == ck.run_id(longer, None)  # how long is not what
    assert ck.run_id(cfg, None) != ck.run_id(other, None)
    assert ck.run_id(cfg, None) != ck.run_id(cfg, "run-x-s000500")
    assert ck.run_id(cfg, None).startswith("run-") and ck.checkpoint_id("run-x", 500) == "run-x-s000500"

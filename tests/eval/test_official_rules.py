"""docs/evaluation.md's table of the paper's FID/FVD rules agrees with the code's official settings."""

import re
from importlib.metadata import version
from pathlib import Path

import numpy as np

from eval.official_features import fvd_preprocess
from eval.protocol import OFFICIAL, drop_to_batch

DOC = Path(__file__).resolve().parents[2] / "docs" / "evaluation.md"


def official_rules() -> list[dict]:
    text = DOC.read_text()
    section = text.split("### The paper's FID and FVD scripts, rule by rule", 1)[1]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("rule", "---"):
            continue
        rows.append(dict(rule=cells[0], source=cells[1], value=cells[2], setting=cells[3].strip("`")))
    return rows


def parse(value: str):
    if value == "whole clip":
        return None
    if value.startswith("off"):
        return False
    if value == "N-1":
        return 1
    if m := re.fullmatch(r"(\d+)x(\d+)", value):
        return int(m[1]), int(m[2])
    return int(value) if value.isdigit() else value


def test_every_official_rule_in_the_docs_table_is_the_codes_setting():
    rows = official_rules()
    assert len(rows) >= 12
    settings = {r["setting"] for r in rows}
    assert {"fvd_batch", "fvd_frames", "fvd_size", "fvd_ddof", "fid_backbone", "fid_size", "fid_ddof", "fvd_backbone", "fvd_drop_to_batch"} <= settings
    for r in rows:
        assert getattr(OFFICIAL, r["setting"]) == parse(r["value"]), r
        assert re.search(r"`[\w/.]+\.(py|sh)(:\d+)?", r["source"]), r  # a file, with its line where one states it


def test_the_rules_behave_as_the_table_says():
    assert OFFICIAL.fvd_batch == 16 and OFFICIAL.fvd_frames is None and OFFICIAL.fvd_size == (224, 224)
    assert OFFICIAL.fvd_ddof == 1 and OFFICIAL.fid_ddof == 1
    # compute_fvd.py's drop, without its [:-0] quirk: a multiple of 16 is kept whole
    assert len(drop_to_batch(list(range(35)), 16)) == 32 and len(drop_to_batch(list(range(32)), 16)) == 32
    assert drop_to_batch(list(range(12)), 16) == []
    v = fvd_preprocess(np.array([0, 255], np.uint8).reshape(1, 1, 1, 2, 1).repeat(3, axis=-1), OFFICIAL.fvd_size)
    assert v.shape == (1, 1, 224, 224, 3) and v.min() == -1.0 and v.max() == 1.0
    # the table cites pytorch-fid 0.3.0's lines; the pinned version is that one
    assert "pytorch-fid 0.3.0" in DOC.read_text() and version("pytorch-fid") == "0.3.0"

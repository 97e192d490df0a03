"""Labels written before the settings digest existed still count when their columns match this run's settings."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from core.config import load_config
from core.tables import Workdir
from tasks.labels import VideoRef, label_videos
from tasks.labels_pending import LabelsChanged, pending_videos


def _legacy_workdir(sample_root, tmp_path) -> tuple[Workdir, list[VideoRef]]:
    """A workdir whose labels part has no config_digest column (as every workdir before it had)."""
    cfg = load_config("tiny").labels
    refs = [VideoRef("sample", "train", v) for v in ("sample_0000", "sample_0001")]
    rows, _ = label_videos(str(sample_root), refs, cfg, {}, str(tmp_path))
    wd = Workdir(tmp_path)
    wd.append("labels", rows)
    (part,) = [p for p in (tmp_path / "tables" / "labels").iterdir() if p.suffix == ".parquet"]
    pq.write_table(pq.read_table(part).drop(["config_digest"]), part)
    return wd, refs


def test_legacy_labels_made_as_this_run_asks_are_kept(sample_root, tmp_path):
    wd, refs = _legacy_workdir(sample_root, tmp_path)
    todo, retried = pending_videos(wd, refs, load_config("tiny").labels)
    assert todo == [] and retried == 0


def test_legacy_labels_made_otherwise_are_named(sample_root, tmp_path):
    wd, refs = _legacy_workdir(sample_root, tmp_path)
    with pytest.raises(LabelsChanged, match=r"resolution 256x256 vs 128x96 \(labels\.resolution\)"):
        pending_videos(wd, refs, load_config("tiny", {"labels.resolution": [128, 96]}).labels)
    with pytest.raises(LabelsChanged, match=r"frames 8 from 0 every 1 vs 4 from 2 every 2 \(labels\.frames\)"):
        pending_videos(wd, refs, load_config("tiny", {"labels.frames": {"count": 4, "start": 2, "stride": 2}}).labels)

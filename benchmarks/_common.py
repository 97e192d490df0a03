"""Helpers shared by the benchmarks: a labelled sample workdir and a peak-memory probe."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.start = self.proc.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.start) / 2**20


# The clips the numbers in benchmarks/README.md were measured on: the paper's 14-frame
# evaluation length (the tiny profile itself labels 8).
CLIP = {"labels.frames.count": 14}


def labelled_workdir(root: Path, videos: int = 12, splits=("train", "val")) -> str:
    """Sample data + labels + entity vectors, with the plain functions (no Prefect/Ray)."""
    from core.config import load_config
    from core.sample_data import write_sample_dataset
    from core.tables import Workdir
    from core.vipseg import read_split
    from tasks.embeddings import embed_videos
    from tasks.labels import VideoRef, label_videos

    data, work = root / "data", root / "work"
    write_sample_dataset(data, n_videos=videos)
    cfg = load_config("tiny", CLIP)
    wd = Workdir(work)
    for split in splits:
        rows, _ = label_videos(str(data), [VideoRef("sample", split, v) for v in read_split(data, split)], cfg.labels, {}, str(work))
        wd.append("labels", rows)
        wd.append("entity_embeddings", embed_videos(str(work), rows, cfg.model))
    return str(work)

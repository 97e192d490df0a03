"""The evaluation suites by name: where each one's items come from, at what size, how many frames.

- ``sample`` / ``vipseg-val``: built from the ``labels`` table and the frames cache of a
  (dataset, split) (the paper's protocol: 256x256, 14 frames; the real clip is the FID/FVD reference);
- ``user-study``: a folder of cases (``evaluate.user_study_dir``) in the official demo format.

Reading the items is ``tasks/suites.py``; the dashboard reads this registry only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    kind: str  # "labels" | "folder"
    dataset: str | None = None
    split: str | None = None
    resolution: tuple[int, int] = (256, 256)
    frames: int = 14


SUITES = {
    "sample": SuiteSpec("sample", "labels", dataset="sample", split="val"),
    "vipseg-val": SuiteSpec("vipseg-val", "labels", dataset="vipseg", split="val"),
    "user-study": SuiteSpec("user-study", "folder"),
}

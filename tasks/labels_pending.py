"""Which videos a labels run must (re)do (the flow's pending list): labels and rejects carry the digest of the settings that made them.

A reject made with other labels settings (another ``labels.frames.count``, say) is
tried again: the settings may have been its cause. Labels made with other settings
stop the run with a sentence saying what differs, unless the run asks to relabel.
"""

from __future__ import annotations

import pyarrow.compute as pc

from core.config import LabelsSettings
from core.tables import Workdir
from tasks.labels import STAGE


class LabelsChanged(ValueError):
    """Stored labels were made with other labels settings than this run's."""


def _trajectory_source(cfg: LabelsSettings) -> str:
    return cfg.trajectory_source if cfg.trajectory_source == "mask-center" else f"tracker:{cfg.tracker.kind}"


def _differences(row: dict, cfg: LabelsSettings) -> list[str]:
    """What the stored columns show differs from ``cfg`` (frames, resolution, trajectory source)."""
    out = []
    frames = [int(i) for i in row["frame_indices"]] if row["frame_indices"] is not None else None
    if frames != cfg.frames.indices():
        out.append(f"frames {_span(frames)} vs {_span(cfg.frames.indices())} (labels.frames)")
    if (row["height"], row["width"]) != tuple(cfg.resolution):
        out.append(f"resolution {row['height']}x{row['width']} vs {cfg.resolution[0]}x{cfg.resolution[1]} (labels.resolution)")
    if row["trajectory_source"] != _trajectory_source(cfg):
        out.append(f"trajectory source {row['trajectory_source']} vs {_trajectory_source(cfg)} (labels.trajectory_source)")
    return out


def _span(frames: list[int] | None) -> str:
    if not frames:
        return "none"
    return f"{len(frames)} from {frames[0]}" + (f" every {frames[1] - frames[0]}" if len(frames) > 1 else "")


def stale_labels(wd: Workdir, refs: list, cfg: LabelsSettings) -> dict[tuple[str, str, str], list[str]]:
    """Videos of ``refs`` whose labels were made with other settings -> what differs (may be ['other settings'])."""
    if not refs:
        return {}
    dataset, split = refs[0].dataset, refs[0].split
    cols = ["dataset", "split", "video_id", "config_digest", "frame_indices", "height", "width", "trajectory_source"]
    rows = wd.read("labels", columns=cols, filter=(pc.field("dataset") == dataset) & (pc.field("split") == split))
    wanted, digest = {r.video_id for r in refs}, cfg.digest()
    stale: dict[tuple[str, str, str], list[str]] = {}
    for row in rows.drop_duplicates(["video_id"]).to_dict("records"):
        if row["video_id"] not in wanted or row["config_digest"] == digest:
            continue
        diff = _differences(row, cfg)
        if not isinstance(row["config_digest"], str) and not diff:
            continue  # labelled before digests were recorded, with what this run asks for
        stale[(row["dataset"], row["split"], row["video_id"])] = diff or ["other labels settings (include_void, min_area_px, tracker, ...)"]
    return stale


def forget_videos(wd: Workdir, keys: set[tuple[str, str, str]]) -> None:
    """Delete the label rows and entity vectors of ``keys`` (dataset, split, video_id), to label them again."""
    labels = wd.keys("labels")
    wd.delete("labels", [k for k in labels if k[:3] in keys])
    videos = {(d, v) for d, _, v in keys}
    wd.delete("entity_embeddings", [k for k in wd.keys("entity_embeddings") if k[:2] in videos])


def pending_videos(wd: Workdir, refs: list, cfg: LabelsSettings, retry_rejects: bool = False, relabel: bool = False) -> tuple[list, int]:
    """(videos to label, how many of them are retried because their reject or labels came from other settings).

    Skipped: videos labelled with these settings, and videos rejected with these
    settings (unless ``retry_rejects``).
    """
    stale = stale_labels(wd, refs, cfg)
    if stale and not relabel:
        (d, s, v), diff = next(iter(stale.items()))
        raise LabelsChanged(
            f"{len(stale)} video(s) of {d}/{s} were labelled with other labels settings than this run's (e.g. {v}: "
            f"{'; '.join(diff)}); re-run with --relabel to replace those labels, or use another workdir to keep both"
        )
    if stale:
        forget_videos(wd, set(stale))
    digest = cfg.digest()
    done = {(d, s, v) for d, s, v, _ in wd.keys("labels")}
    rejects = wd.read("rejects", columns=["stage", "item", "config_digest"])
    rejects = rejects[rejects["stage"] == STAGE]
    items = {r.item for r in refs}
    other = [(STAGE, i) for i, dg in zip(rejects["item"], rejects["config_digest"]) if i in items and (retry_rejects or dg != digest)]
    if other:
        wd.delete("rejects", other)
    rejected = set(rejects["item"]) - {i for _, i in other}
    todo = [r for r in refs if (r.dataset, r.split, r.video_id) not in done and r.item not in rejected]
    return todo, len(stale) + (0 if retry_rejects else len(other))

"""Suites: the inputs of generation and the ground truth of evaluation.

A suite (registered by name in ``core/suites.py``) is a list of ``SuiteItem``: a first
frame, first-frame entity masks and one trajectory per entity, at the suite's resolution.

- ``sample`` / ``vipseg-val``: built from the ``labels`` table and the frames cache
  (the paper's protocol: 256x256, 14 frames; the real clip is the FID/FVD reference).
- ``user-study``: a folder of still images with masks and trajectories, no video,
  in the official demo format (``tasks.user_study``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.geometry import incircles, scale_points
from core.media import load_cached_clip, resize_clip
from core.suites import SuiteSpec
from core.tables import Workdir


@dataclass
class SuiteItem:
    suite: str
    item_id: str
    image: np.ndarray  # (H, W, 3) uint8, first frame
    masks: np.ndarray  # (E, H, W) bool, first frame
    entity_ids: list[int]
    trajectories: np.ndarray  # (E, L, 2) float32, suite pixels
    visible: np.ndarray  # (E, L) bool
    radii: np.ndarray  # (E,) first-frame incircle radius
    orig_hw: tuple[int, int]  # ObjMC is reported at this size
    reference: str | None = None  # frames-cache path of the real clip, if any
    notes: list[str] = field(default_factory=list)
    starts: np.ndarray | None = None  # (E, 2) where each entity's track starts (default: trajectories[:, 0])
    ground_truth: str = ""  # how the trajectories were made (goes into the conditions table)
    protocol: str = ""

    @property
    def hw(self) -> tuple[int, int]:
        return self.image.shape[:2]


LABELS_GROUND_TRUTH = "labels"  # the label trajectories themselves; stored as "labels (<trajectory source>)"


def same_ground_truth(stored: str, expected: str | None) -> bool:
    """Whether a video's frozen ground truth (conditions.ground_truth) is the one the config makes now."""
    if expected is None:
        return True
    return str(stored).split(" (", 1)[0] == LABELS_GROUND_TRUTH if expected == LABELS_GROUND_TRUTH else stored == expected


def ground_truth_identity(protocol, tracker_desc: str, spec: SuiteSpec) -> str:
    """How a labels suite's tracked ground truth is made: stored with every video's conditions."""
    where = "at the original size" if protocol.track_at == "eval" else f"at {spec.resolution[0]}x{spec.resolution[1]}"
    return f"{protocol.name}: real clip tracked {where} with {tracker_desc or 'the tracker'}, {protocol.objmc_rules()}"


def labels_items(
    wd: Workdir, spec: SuiteSpec, only: set[str] | None = None, protocol=None, tracker=None, tracker_desc: str = ""
) -> list[SuiteItem]:
    """Items from the ``labels`` table: one per video of (dataset, split), or of ``only`` those.

    ``protocol`` (``eval.protocol.Protocol``) decides the ground truth, which is also what
    the generator is asked to do. ``tracked``: the real clip tracked from each entity's
    start point with the protocol's grid rule (``project``: at the suite's resolution from
    the label centre; ``official``: at the original size from the official centre, int
    points). ``labels``: the label trajectories (per-frame incircle centres for
    ``mask-center`` labels, which jump under occlusion). Without a protocol: labels.
    """
    import pyarrow.compute as pc

    from eval.catalog import tracking_rules
    from eval.objmc import ground_truth_tracks, official_center

    filt = (pc.field("dataset") == spec.dataset) & (pc.field("split") == spec.split)
    if only is not None:
        filt &= pc.field("video_id").isin(sorted(only))
    rows = wd.read("labels", filter=filt)
    items = []
    for video_id, group in rows.groupby("video_id", sort=True):
        group = group.sort_values("entity_id")
        first = group.iloc[0]
        label_hw = (int(first["height"]), int(first["width"]))
        orig_hw = (int(first["orig_height"]), int(first["orig_width"]))
        L = min(spec.frames, len(first["centers"]))
        clip, clip_ids = load_cached_clip(wd, first["frames_path"])
        frames, ids = resize_clip(clip[:L], clip_ids[:L], spec.resolution)
        entity_ids = [int(e) for e in group["entity_id"]]
        trajectories = np.stack([scale_points(np.stack(c)[:L], label_hw, spec.resolution) for c in group["centers"]]).astype(np.float32)
        visible = np.stack([np.asarray(v[:L], bool) for v in group["visible"]])
        if protocol is not None and protocol.entities == "first-mask":
            # The official script scores every id of the first panoptic mask, void (0) and the
            # tiniest included; their ground truth is tracked below (official: always tracked).
            extra = [int(e) for e in np.unique(ids[0]) if int(e) not in set(entity_ids)]
            if extra:
                c0, _, _ = incircles(ids[0], extra)
                entity_ids += extra
                trajectories = np.concatenate([trajectories, np.repeat(c0[:, None].astype(np.float32), L, axis=1)])
                visible = np.concatenate([visible, np.ones((len(extra), L), bool)])
        masks = np.stack([ids[0] == e for e in entity_ids])
        keep = masks.any(axis=(1, 2))  # an entity can vanish when the suite is coarser than the labels
        starts = trajectories[:, 0].copy()
        how = f"{LABELS_GROUND_TRUTH} ({first['trajectory_source']})"
        if protocol is not None and protocol.ground_truth == "tracked":
            rules = tracking_rules(protocol)
            if protocol.track_at == "eval":
                big, big_ids = resize_clip(clip, clip_ids, orig_hw)  # the whole clip, as the official script tracks it
                at_eval = np.array([official_center(big_ids[0] == e)[:2] if protocol.center_rule == "official" else
                                    scale_points(trajectories[k, 0], spec.resolution, orig_hw) for k, e in enumerate(entity_ids)], np.float64)
                ok = np.isfinite(at_eval).all(axis=1)
                at_eval[~ok] = scale_points(trajectories[~ok, 0], spec.resolution, orig_hw)
                tracks = ground_truth_tracks(big, at_eval, tracker, **rules)[:, :L]
                trajectories = scale_points(tracks, orig_hw, spec.resolution).astype(np.float32)
                starts = scale_points(at_eval, orig_hw, spec.resolution).astype(np.float32)
            else:
                trajectories = ground_truth_tracks(frames, starts, tracker, **rules).astype(np.float32)
            visible = np.ones_like(visible)  # a tracked ground truth has a point on every frame
            how = ground_truth_identity(protocol, tracker_desc, spec)
        _, radii, _ = incircles(ids[0], entity_ids)
        items.append(
            SuiteItem(
                suite=spec.name,
                item_id=str(video_id),
                image=frames[0],
                masks=masks[keep],
                entity_ids=[e for e, k in zip(entity_ids, keep) if k],
                trajectories=trajectories[keep],
                visible=visible[keep],
                radii=radii[keep].astype(np.float32),
                orig_hw=orig_hw,
                reference=str(first["frames_path"]),
                starts=starts[keep],
                ground_truth=how,
                protocol=protocol.name if protocol is not None else "",
            )
        )
    return items

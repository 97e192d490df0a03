"""Entities and the case: clicks segmented into masks, drawn paths turned into the model's trajectories.

Each :class:`EntitySpec` is positive/negative clicks (or "the whole image" for camera motion)
and a path of clicks. Clicks are segmented with SAM or the GrabCut fallback
(``model.segmentation``); an empty mask, a missing path or more entities than
``drag.max_entities`` is a :class:`DragError`; points outside the image are clipped with a
note. The drawn path is moved so that it starts at the entity's inscribed circle centre (the
point the model was trained to move): the entity then moves by exactly the drawn displacement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.geometry import incircle
from tasks.drag.common import DragError, Point
from tasks.drag.points import anchor_path, camera_mask, clip_points
from tasks.suites import SuiteItem


@dataclass
class EntitySpec:
    """What the user gave for one entity (working-image pixels)."""

    positive: list[Point] = field(default_factory=list)
    negative: list[Point] = field(default_factory=list)
    path: list[Point] = field(default_factory=list)
    camera: bool = False
    choice: int | None = None  # SAM: which of its 3 masks (0 small .. 2 large); None = best score


@dataclass
class Entity:
    """One resolved entity: its mask and the path the model gets."""

    mask: np.ndarray  # (H, W) bool
    path: np.ndarray  # (K, 2) as drawn (clipped), working-image pixels
    trajectory: np.ndarray  # (K, 2) what the model gets (anchored at the centre unless as-drawn; clipped)
    centre: tuple[float, float]  # inscribed circle centre
    radius: float
    camera: bool = False
    method: str = ""
    score: float = float("nan")


def segment_spec(segmenter, image: np.ndarray, spec: EntitySpec, label: str = "entity"):
    """The mask of one entity: the whole image for the camera, else the segmenter's, never empty."""
    from model.segmentation import Segmentation

    if spec.camera:
        return Segmentation(camera_mask(image.shape[:2]), 1.0, [], "whole image")
    if not spec.positive:
        raise DragError(f"{label}: click on it at least once to select it (or choose the whole image for camera motion)")
    kwargs = {"choice": spec.choice} if spec.choice is not None and getattr(segmenter, "name", "").startswith("sam") else {}
    seg = segmenter.segment(image, list(spec.positive), list(spec.negative), **kwargs)
    if not np.asarray(seg.mask).any():
        where = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in spec.positive)
        raise DragError(
            f"{label}: the selection at {where} gave an empty mask ({seg.method}); click nearer the middle of the entity, "
            "remove negative clicks that cover it, or pick another of SAM's masks"
        )
    return seg


@dataclass
class DragCase:
    """An image and its entities, ready to become a suite item or a saved case."""

    image: np.ndarray
    entities: list[Entity]
    notes: list[str] = field(default_factory=list)
    name: str = "drag"

    @property
    def hw(self) -> tuple[int, int]:
        return self.image.shape[:2]

    @property
    def masks(self) -> np.ndarray:
        return np.stack([e.mask for e in self.entities])

    @property
    def trajectories(self) -> list[np.ndarray]:
        return [e.trajectory for e in self.entities]

    def case_id(self) -> str:
        """A short digest of everything that determines the video (image, masks, trajectories)."""
        h = hashlib.sha1()
        h.update(np.ascontiguousarray(self.image).tobytes())
        h.update(str(self.image.shape).encode())
        for e in self.entities:
            h.update(np.packbits(e.mask).tobytes())
            h.update(np.round(e.trajectory, 2).astype(np.float32).tobytes())
        return h.hexdigest()[:12]

    def to_item(self, num_frames: int, item_id: str | None = None) -> SuiteItem:
        """The generator's input: trajectories interpolated (PCHIP) to one point per frame."""
        from model.maps import interpolate_path

        trajs = np.stack([interpolate_path(t, num_frames) for t in self.trajectories]).astype(np.float32)
        n = len(self.entities)
        return SuiteItem(
            suite="drag",
            item_id=item_id or self.case_id(),
            image=self.image,
            masks=self.masks,
            entity_ids=list(range(1, n + 1)),
            trajectories=trajs,
            visible=np.ones((n, num_frames), bool),
            radii=np.array([e.radius for e in self.entities], np.float32),
            orig_hw=self.hw,
            notes=list(self.notes),
        )

    def model_notes(self, height: int, width: int, min_radius: float = 2.5) -> list[str]:
        """Warnings that depend on the model's resolution (entities too thin for a Gaussian)."""
        H, W = self.hw
        s = float(np.sqrt(height / H * width / W))
        out = []
        for k, e in enumerate(self.entities, start=1):
            if not e.camera and e.radius * s < min_radius:
                out.append(
                    f"entity {k} is very thin at the model's {width}x{height} (inscribed radius {e.radius * s:.1f} px < "
                    f"{min_radius}): the model gets no Gaussian for it, only its entity map; select a thicker part"
                )
        return out


def check_count(n: int, max_entities: int) -> None:
    if n == 0:
        raise DragError("no entity selected: click on the thing to move (or choose the whole image for camera motion) and draw its path")
    if n > max_entities:
        raise DragError(
            f"{n} entities selected, but at most {max_entities} can be controlled in one video (drag.max_entities); "
            f"remove {n - max_entities}"
        )


def resolve_entity(
    segmenter, image: np.ndarray, spec: EntitySpec, label: str, anchor: bool = True, notes: list[str] | None = None
) -> Entity:
    """Segment one entity and turn its drawn path into the model's trajectory (clipped, noted)."""
    notes = notes if notes is not None else []
    hw = image.shape[:2]
    if spec.positive and not spec.camera:
        pos, warn = clip_points(spec.positive, hw, f"{label} clicks")
        neg, warn2 = clip_points(spec.negative, hw, f"{label} negative clicks") if spec.negative else (np.zeros((0, 2)), None)
        notes += [w for w in (warn, warn2) if w]
        spec = EntitySpec([tuple(p) for p in pos], [tuple(p) for p in neg], spec.path, spec.camera, spec.choice)
    seg = segment_spec(segmenter, image, spec, label)
    if not spec.path:
        raise DragError(f"{label} has no path: click where it should go, in order (a single point keeps it still)")
    path = np.asarray(spec.path, np.float64).reshape(-1, 2)
    cx, cy, r = incircle(seg.mask)
    # Only the trajectory the model gets must stay inside: a drawn path is a displacement
    # (a camera pan may well be drawn off the edge).
    traj, warn = clip_points(anchor_path(path, (cx, cy)) if anchor else path, hw, f"{label} path")
    if warn:
        notes.append(warn)
    return Entity(np.asarray(seg.mask, bool), path, traj, (cx, cy), float(r), spec.camera, seg.method, float(seg.score))


def build_case(
    image: np.ndarray,
    specs: Sequence[EntitySpec],
    segmenter,
    max_entities: int,
    anchor: bool = True,
    notes: Sequence[str] = (),
    name: str = "drag",
) -> DragCase:
    """Every entity resolved (or the first problem as a :class:`DragError`)."""
    check_count(len(specs), max_entities)
    if sum(1 for s in specs if s.camera) > 1:
        raise DragError("the whole image (camera motion) is selected more than once; keep one camera path")
    out_notes = list(notes)
    entities = [resolve_entity(segmenter, image, s, f"entity {k}", anchor, out_notes) for k, s in enumerate(specs, start=1)]
    return DragCase(image, entities, out_notes, name)

"""Click-to-mask segmentation for the drag interaction: SAM, or GrabCut without SAM weights.

Both take an RGB image and positive/negative clicks ``(x, y)`` and return a boolean
mask of the image's size. ``SamSegmenter`` wraps segment-anything's
``SamPredictor`` (checkpoint from a local path; nothing downloads) and computes
the image embedding once per image. ``GrabCutSegmenter`` is the documented
fallback: OpenCV GrabCut seeded by the clicks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

SAM_TYPES = ("vit_b", "vit_l", "vit_h")
SAM_CHECKPOINTS = {  # the official file names, for the error message
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}

Point = tuple[float, float]


@dataclass
class Segmentation:
    mask: np.ndarray  # (H, W) bool
    score: float
    candidates: list[np.ndarray]  # every mask the method proposed (SAM: 3), best first
    method: str


def _largest_component_with(mask: np.ndarray, points: Sequence[Point]) -> np.ndarray:
    """The connected parts of ``mask`` that hold a positive click (all of it if none does)."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8))
    keep = set()
    H, W = mask.shape
    for x, y in points:
        lab = labels[int(np.clip(round(y), 0, H - 1)), int(np.clip(round(x), 0, W - 1))]
        if lab:
            keep.add(lab)
    if not keep:
        return mask
    return np.isin(labels, list(keep))


class GrabCutSegmenter:
    """OpenCV GrabCut seeded by clicks: discs around positive clicks are certain
    foreground, around negative clicks and along the border certain background, a
    window around the positive clicks probable foreground."""

    name = "grabcut"

    def __init__(self, iterations: int = 5, seed_radius_frac: float = 0.02, window_frac: float = 0.35):
        self.iterations = iterations
        self.seed_radius_frac = seed_radius_frac
        self.window_frac = window_frac

    def segment(self, image: np.ndarray, positive: Sequence[Point], negative: Sequence[Point] = ()) -> Segmentation:
        if not positive:
            raise ValueError("click at least once on the entity to select")
        img = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
        H, W = img.shape[:2]
        r = max(2, int(round(self.seed_radius_frac * min(H, W))))
        mask = np.full((H, W), cv2.GC_BGD, np.uint8)
        pts = np.asarray(positive, float)
        half = self.window_frac * max(H, W) / 2
        x0, y0 = np.clip(pts.min(0) - half, 0, [W - 1, H - 1]).astype(int)
        x1, y1 = np.clip(pts.max(0) + half, 0, [W - 1, H - 1]).astype(int)
        mask[y0 : y1 + 1, x0 : x1 + 1] = cv2.GC_PR_FGD
        border = max(2, r // 2)
        mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD
        for x, y in negative:
            cv2.circle(mask, (int(round(x)), int(round(y))), r, int(cv2.GC_BGD), -1)
        for x, y in positive:
            cv2.circle(mask, (int(round(x)), int(round(y))), r, int(cv2.GC_FGD), -1)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # GrabCut's GMM initialisation is random: keep it repeatable
        cv2.grabCut(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), mask, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
        fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
        fg = _largest_component_with(fg, positive)
        return Segmentation(fg, float(fg.mean() > 0), [fg], self.name)


class SamSegmenter:
    """segment-anything's ``SamPredictor`` from a local checkpoint, one embedding per image."""

    name = "sam"

    def __init__(
        self,
        checkpoint: str | None,
        model_type: Literal["vit_b", "vit_l", "vit_h"] = "vit_b",
        device: str = "cpu",
        random_weights: bool = False,
    ):
        from segment_anything import SamPredictor, sam_model_registry

        if model_type not in SAM_TYPES:
            raise ValueError(f"SAM model type must be one of {', '.join(SAM_TYPES)}, got {model_type!r}")
        if not random_weights:
            if not checkpoint or not Path(checkpoint).is_file():
                raise FileNotFoundError(
                    f"SAM checkpoint not found at {checkpoint!r}; download {SAM_CHECKPOINTS[model_type]} from "
                    "https://github.com/facebookresearch/segment-anything#model-checkpoints and set drag.sam_checkpoint, "
                    "or leave it empty to use the GrabCut fallback"
                )
        # Built without a file, then loaded by us: the registry's own loader would accept
        # only a path and we want the same code path for tests (random weights).
        sam = sam_model_registry[model_type](checkpoint=None)
        if not random_weights:
            import torch

            sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        self.predictor = SamPredictor(sam.to(device).eval())
        self._image_key: str | None = None
        self.name = f"sam-{model_type}" + ("-random" if random_weights else "")

    def set_image(self, image: np.ndarray) -> None:
        """Compute the image embedding, unless this image's is already there."""
        img = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
        key = hashlib.sha1(img.tobytes()).hexdigest() + str(img.shape)
        if key != self._image_key:
            self.predictor.set_image(img)
            self._image_key = key

    def segment(
        self, image: np.ndarray, positive: Sequence[Point], negative: Sequence[Point] = (), choice: int | None = None
    ) -> Segmentation:
        """``choice`` picks one of SAM's three masks (0 small .. 2 large); None = SAM's best score."""
        if not positive:
            raise ValueError("click at least once on the entity to select")
        self.set_image(image)
        coords = np.asarray(list(positive) + list(negative), np.float32)
        labels = np.asarray([1] * len(positive) + [0] * len(negative), np.int32)
        masks, scores, _ = self.predictor.predict(point_coords=coords, point_labels=labels, multimask_output=True)
        order = np.argsort(-scores)
        k = int(order[0]) if choice is None else int(choice)
        return Segmentation(masks[k].astype(bool), float(scores[k]), [masks[i].astype(bool) for i in order], self.name)


def make_segmenter(sam_checkpoint: str | None, model_type: str = "vit_b", device: str = "cpu"):
    """SAM when its checkpoint is configured, else the GrabCut fallback."""
    if sam_checkpoint:
        return SamSegmenter(sam_checkpoint, model_type, device)  # a wrong path is an error, not a silent fallback
    return GrabCutSegmenter()

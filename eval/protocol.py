"""Evaluation protocols: one switch (``evaluate.protocol``) with named settings.

``official`` reproduces the DragAnything paper's scripts; ``project`` is this
project's improved rules. docs/evaluation.md lists both, each deviation with its
reason. A number's *identity* (``eval.catalog.Identity``) names the protocol, the tracker
and its settings, the sizes and the backbone; numbers with different identities
are never ranked together.

Facts behind ``official`` (read from the public scripts, not copied):
  * ground truth and prediction: CoTracker2 on the video at the *original* video
    size (the scripts track "..._OriginalSize" videos), ``grid_size`` 100 (both shell
    scripts pass ``--grid_size 100``; 10 is only argparse's default), the grid laid
    out by CoTracker's ``get_points_on_a_grid`` on the model's interpolation shape
    (384 x 512 for CoTracker2): ``linspace(m, extent - m, size)`` on each axis with
    m = interp width / 64, tracks scaled back by (W - 1) / (interp W - 1);
  * an entity's start: ``cv2.distanceTransform(mask, DIST_L2, 5)`` on the unpadded
    first-frame mask and ``minMaxLoc``'s first maximum (row-major), so the frame
    border is not a boundary; the track whose frame-0 point is nearest (first
    minimum) is the entity's; points are written as ``int(x), int(y)``;
  * ObjMC: one flat mean of the Euclidean distance over every zipped
    (video, entity, frame) of the ground-truth and predicted JSON files;
  * FID: ``python -m pytorch_fid`` on the two folders of frames (``utils/Eval_FID.sh``):
    pytorch-fid's Inception (FID weights ``pt_inception-2015-12-05-*.pth``), pool3 2048-d,
    each image to [0, 1], bilinear resize to 299 x 299, then 2x - 1; covariance / (N - 1);
  * FVD: ``utils/Eval_FVD/compute_fvd.py``: whole clips (all their frames), TF-GAN's
    ``preprocess(videos, (224, 224))`` (TF1 ``resize_bilinear``, then 2x / 255 - 1), the
    TF-hub Kinetics-400 I3D logits, TF-GAN's Fréchet distance (covariance / (N - 1)).
    ``VIDEO_BATCH_SIZE = 16`` is videos per I3D batch; the script drops the file list to a
    multiple of 16 (``fvd_drop_to_batch``, an option here), and its ``[:-0]`` empties a list
    already a multiple of 16: that quirk is documented, not copied.

``project`` keeps clean-fid's Inception ("clean" resize) for FID and StyleGAN-V's FVD
conventions (its I3D call, covariance / N). docs/evaluation.md has the table of rules, each
with its source line; tests/eval/test_official_rules.py checks the table against this file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from core.names import PROTOCOLS  # the names are the config's; this module gives each its settings

COTRACKER2_INTERP_SHAPE = (384, 512)


@dataclass(frozen=True)
class Protocol:
    """The rules that make an evaluation number (docs/evaluation.md explains each)."""

    name: str
    grid_layout: str  # "cotracker": CoTracker's get_points_on_a_grid; "cells": centres of equal cells
    grid_size: int
    add_centers: bool  # also track the exact start points (the chosen track starts on the centre)
    center_rule: str  # "official": unpadded distance transform, first maximum; "ridge": padded, ridge centroid
    integer_points: bool  # tracks truncated to int, as the official JSON files hold them
    track_at: str  # "eval": the video is resized to the evaluation size first; "video": tracked at its own size
    ground_truth: str  # "tracked": the real clip tracked from the start points; "labels": the label trajectories
    fvd_frames: int | None  # clip length FVD needs (shorter videos are refused); None: the whole clip
    fid_ddof: int = 1
    fvd_ddof: int = 0
    fid_backbone: str = "clean-fid"  # "pytorch-fid": its Inception and preprocessing; "clean-fid": clean-fid's
    fvd_backbone: str = "stylegan-v"  # "tf-hub": compute_fvd.py's preprocessing and I3D logits; "stylegan-v": its I3D call
    fvd_batch: int = 0  # videos per I3D batch of the paper's script (0: none); the drop rule below uses it
    fvd_drop_to_batch: bool = False  # drop the item list to a multiple of fvd_batch, as compute_fvd.py does
    fvd_size: tuple[int, int] = (224, 224)  # I3D input size
    fid_size: tuple[int, int] = (299, 299)  # Inception input size
    entities: str = "labels"  # "first-mask": every id of the first panoptic mask (void, tiny); "labels": the labelled entities
    interp_shape: tuple[int, int] = COTRACKER2_INTERP_SHAPE

    def objmc_rules(self, ground_truth: str | None = None) -> str:
        """The rules in words; ``ground_truth`` names a suite's own ground truth (e.g. the user
        study's drawn paths, which are not tracked) instead of the protocol's."""
        layout = "CoTracker grid" if self.grid_layout == "cotracker" else "cell grid"
        parts = [f"{layout} {self.grid_size}", "+centres" if self.add_centers else "grid only", f"centre {self.center_rule}"]
        parts.append("tracked at eval size" if self.track_at == "eval" else "tracked at video size")
        if self.integer_points:
            parts.append("int points")
        if self.entities == "first-mask":
            parts.append("every first-mask id")
        parts.append(f"gt {ground_truth or self.ground_truth}")
        return ", ".join(parts)


OFFICIAL = Protocol(
    name="official",
    grid_layout="cotracker",
    grid_size=100,
    add_centers=False,
    center_rule="official",
    integer_points=True,
    track_at="eval",
    ground_truth="tracked",
    fvd_frames=None,
    fid_ddof=1,
    fvd_ddof=1,
    fid_backbone="pytorch-fid",
    fvd_backbone="tf-hub",
    fvd_batch=16,
    entities="first-mask",
)

PROJECT = Protocol(
    name="project",
    grid_layout="cells",
    grid_size=10,
    add_centers=True,
    center_rule="ridge",
    integer_points=False,
    track_at="video",
    ground_truth="tracked",
    fvd_frames=None,
)


def protocol_for(
    name: str, grid_size: int | None = None, add_centers: bool | None = None, ground_truth: str | None = None, fvd_drop_to_batch: bool = False
) -> Protocol:
    """The named protocol; ``project`` takes the configurable knobs, ``official`` only its FVD drop rule."""
    if name == "official":
        return replace(OFFICIAL, fvd_drop_to_batch=True) if fvd_drop_to_batch else OFFICIAL
    if name != "project":
        raise ValueError(f"evaluate.protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}")
    changes = {k: v for k, v in dict(grid_size=grid_size, add_centers=add_centers, ground_truth=ground_truth).items() if v is not None}
    return replace(PROJECT, **changes)


def tracker_label(kind: str, settings: dict | None = None) -> str:
    """The tracker and the settings that change its tracks, e.g. 'lk(win 9, levels 3, fb 1.0)'."""
    from core.config import LKTracker

    s = settings or {}
    if kind == "lk":
        lk = LKTracker(**s)  # unset settings are the config's defaults
        return f"lk(win {lk.win_size}, levels {lk.max_level}, fb {lk.fb_threshold_px})"
    if kind == "cotracker":
        ckpt = str(s.get("checkpoint") or "?").rsplit("/", 1)[-1]
        return f"cotracker({ckpt})"
    return kind


def drop_to_batch(items: list, batch: int) -> list:
    """compute_fvd.py's rule: keep the first ``len - len % batch`` items.

    The script writes ``paths[:-remainder]``, which with a remainder of 0 is ``paths[:0]``,
    an empty list; here a list already a multiple of ``batch`` is kept whole.
    """
    if batch <= 0:
        return list(items)
    return list(items[: len(items) - len(items) % batch])

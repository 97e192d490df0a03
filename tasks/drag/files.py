"""``draganything drag``: an image file, clicks and paths in its pixels -> an mp4 file (and a case).

The CLI parses its options into a :class:`DragRequest`; :func:`drag_files` does the rest with the
same pieces as the Drag page (image, case, checkpoint choice, :func:`run_drag`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.config import Config
from core.tables import Workdir
from tasks.drag.case import EntitySpec, build_case
from tasks.drag.cases import save_case
from tasks.drag.checkpoints import checkpoint_hw_frames, choose_checkpoint
from tasks.drag.common import DragError, Point, Progress
from tasks.drag.generation import run_drag
from tasks.drag.image import load_image


@dataclass
class EntityInput:
    """One entity as given in the image file's pixels: clicks on it (none: the camera), its path, clicks off it."""

    clicks: list[Point]
    path: list[Point]
    camera: bool = False
    negative: list[Point] = field(default_factory=list)


@dataclass
class DragRequest:
    image: Path
    entities: list[EntityInput]
    workdir: str  # the workdir whose checkpoints table holds the controller
    out: Path  # the .mp4 to write
    checkpoint: str | None = None  # None: the newest trained one
    seed: int = 0
    mask_choice: int | None = None  # SAM's mask 0/1/2; None: its best
    anchor: bool = True  # start each path at the entity's centre
    crop: bool | None = None  # None: drag.crop_to_model_aspect
    preview: Path | None = None  # also write a PNG of the selections and paths
    save_case: Path | None = None  # also save the case in the user-study format


def drag_files(req: DragRequest, cfg: Config, progress: Progress | None = None, note: Callable[[str], None] | None = None) -> dict:
    """Segment, anchor, generate and write ``req.out``; ``note`` gets each warning as it is known."""
    from model.segmentation import make_segmenter

    if req.out.suffix.lower() != ".mp4":
        raise DragError(f"--out {req.out} must end in .mp4 (the video is H.264 in an MP4 file)")
    wd = Workdir(req.workdir)
    ckpt = choose_checkpoint(wd, req.checkpoint)
    height, width, num_frames = checkpoint_hw_frames(ckpt)
    crop = cfg.drag.crop_to_model_aspect if req.crop is None else req.crop
    work = load_image(req.image, cfg.drag.max_image_side, (height, width) if crop else None, name=str(req.image))
    specs = []
    for e in req.entities:
        positive = [] if e.camera else [tuple(q) for q in work.to_work(e.clicks)]
        negative = [] if e.camera or not e.negative else [tuple(q) for q in work.to_work(e.negative)]
        specs.append(EntitySpec(positive, negative, [tuple(q) for q in work.to_work(e.path)], e.camera, req.mask_choice))
    segmenter = make_segmenter(cfg.drag.sam_checkpoint, cfg.drag.sam_model_type)
    case = build_case(work.image, specs, segmenter, cfg.drag.max_entities, anchor=req.anchor, notes=work.notes, name=req.image.stem)
    case.notes += case.model_notes(height, width)
    for text in case.notes:
        (note or (lambda _: None))(text)
    if req.preview is not None:
        import cv2

        from tasks.drag.drawing import case_overlays, render_overlay

        shown = render_overlay(case.image, case_overlays(case), width=max(512, case.image.shape[1]))
        req.preview.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(req.preview), cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
    req.out.parent.mkdir(parents=True, exist_ok=True)
    video = run_drag(wd.url, ckpt, case.to_item(num_frames), cfg, req.seed, req.out.name, progress, out_url=str(req.out.parent.resolve()))
    saved = str(save_case(req.save_case, case)) if req.save_case is not None else None
    return {
        "video": str(req.out), "checkpoint": ckpt["checkpoint_id"], "frames": video["frames"], "height": video["height"],
        "width": video["width"], "segmentation": getattr(segmenter, "name", "?"), "entities": len(case.entities), "case": saved,
        "notes": case.notes,
    }

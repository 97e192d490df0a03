"""The interactive drag: an image, clicked entities, drawn paths -> a video from a trained controller.

Shared by the dashboard's Drag page and ``draganything drag``, one module per concern:

| module | what |
|---|---|
| ``image`` | :func:`load_image`: decode and validate an upload or a file, crop to the model's aspect, downscale; :class:`WorkImage` maps file pixels to it |
| ``points`` | :func:`parse_points`, :func:`clip_points`, :func:`anchor_path` |
| ``case`` | :class:`EntitySpec` -> :class:`Entity` (segmented, path anchored at the incircle centre) -> :class:`DragCase` (:func:`build_case`) |
| ``view`` | :func:`model_view`: centres, radii, Gaussian and entity maps as the pipeline renders them |
| ``drawing`` | :func:`render_overlay`: masks, clicks, paths and PCHIP trajectories over the image |
| ``checkpoints`` | :func:`choose_checkpoint`: an explicit id, else the newest trained controller with weights |
| ``generation`` | :func:`run_drag`: the video (H.264 mp4) of a case, what the CLI and the page both call |
| ``remote`` | :func:`submit`: :func:`run_drag` as a Ray task with a progress actor (the page) |
| ``cases`` | :func:`save_case` / :func:`case_zip`: the official user-study folder format |
| ``files`` | :func:`drag_files`: the CLI's whole run, from an image file and clicks in its pixels |

The names below are the package's interface (``from tasks import drag as dg``).
"""

from tasks.drag.case import DragCase, Entity, EntitySpec, build_case, check_count, resolve_entity, segment_spec
from tasks.drag.cases import case_summary, case_zip, cases_root, check_case_name, save_case
from tasks.drag.checkpoints import checkpoint_hw_frames, choose_checkpoint, trained_checkpoints
from tasks.drag.common import DragError, Point, Progress, color
from tasks.drag.drawing import Overlay, case_overlays, heat_rgb, render_overlay
from tasks.drag.files import DragRequest, EntityInput, drag_files
from tasks.drag.generation import generate_frames, run_drag, video_relpath
from tasks.drag.image import IMAGE_TYPES, WorkImage, decode_image, load_image, prepare_image
from tasks.drag.points import anchor_path, camera_mask, clip_points, parse_point, parse_points
from tasks.drag.remote import RemoteGeneration, submit
from tasks.drag.view import ModelView, model_view

__all__ = [
    "DragCase", "Entity", "EntitySpec", "build_case", "check_count", "resolve_entity", "segment_spec",
    "case_summary", "case_zip", "cases_root", "check_case_name", "save_case",
    "checkpoint_hw_frames", "choose_checkpoint", "trained_checkpoints",
    "DragError", "Point", "Progress", "color",
    "Overlay", "case_overlays", "heat_rgb", "render_overlay",
    "DragRequest", "EntityInput", "drag_files",
    "generate_frames", "run_drag", "video_relpath",
    "IMAGE_TYPES", "WorkImage", "decode_image", "load_image", "prepare_image",
    "anchor_path", "camera_mask", "clip_points", "parse_point", "parse_points",
    "RemoteGeneration", "submit",
    "ModelView", "model_view",
]

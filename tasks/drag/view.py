"""What the model sees: centres, radii, Gaussian and entity maps at the model's resolution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.geometry import rescale
from tasks.drag.case import DragCase
from tasks.drag.common import color


@dataclass
class ModelView:
    """Per-frame conditioning at the model's resolution, as the pipeline renders it."""

    centers: np.ndarray  # (T, N, 2) model pixels, in the user's entity order
    radii: np.ndarray  # (N,) model pixels
    gaussian: np.ndarray | None  # (H, W) float in [0, 1] for the frame asked
    entity: np.ndarray | None  # (H, W, 3) uint8: each entity's disc in its colour (its vector, in the model)
    height: int
    width: int


def model_view(case: DragCase, height: int, width: int, num_frames: int, frame: int | None = 0,
               sigma_ratio: float = 0.4, support_ratio: float = 1.0) -> ModelView:
    """Centres, radii and (for ``frame``) the Gaussian and entity maps the model is given.

    Same steps as ``DragAnythingPipeline.prepare_entities`` + ``render_conditions``: paths
    interpolated with PCHIP, moved to the model's pixel grid, the generator's radii scaled
    with them, entities painted large to small.
    """
    import torch

    from model.maps import entity_maps, gaussian_maps, interpolate_path, paint_order

    H, W = case.hw
    sx, sy = width / W, height / H
    paths = np.stack([interpolate_path(t, num_frames) for t in case.trajectories], 1)  # (T, N, 2)
    centers = rescale(paths, sx, sy)
    radii = np.array([e.radius for e in case.entities], np.float32) * float(np.sqrt(sx * sy))
    gauss = ent = None
    if frame is not None:
        t = int(np.clip(frame, 0, num_frames - 1))
        c = torch.from_numpy(centers[t : t + 1]).float()
        r = torch.from_numpy(radii).float()
        order = paint_order(r)
        gauss = gaussian_maps(c[:, order], r[order], height, width, sigma_ratio, support_ratio)[0, 0].numpy()
        cols = torch.tensor([color(k) for k in range(len(case.entities))], dtype=torch.float32)[order]
        ent = entity_maps(cols, c[:, order], r[order], height, width)[0].permute(1, 2, 0).numpy().astype(np.uint8)
    return ModelView(centers.astype(np.float32), radii, gauss, ent, height, width)

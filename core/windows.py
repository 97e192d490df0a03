"""Training views of a clip: which frames, in which order, the model sees."""

from __future__ import annotations

import numpy as np


def window(start: int, backwards: bool, length: int) -> np.ndarray:
    """The frame indices of a view, in the order the model sees them."""
    idx = np.arange(start, start + length)
    return idx[::-1].copy() if backwards else idx

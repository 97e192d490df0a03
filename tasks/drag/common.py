"""What every part of the drag shares: the error, the types of points and progress, the entity colours."""

from __future__ import annotations

from collections.abc import Callable

Point = tuple[float, float]
Progress = Callable[[str, int, int], None]  # (stage, done, total)

PALETTE = (  # RGB, one per entity (cycled)
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (127, 127, 127),
)


class DragError(ValueError):
    """An input the drag cannot use; the message says what is wrong and what to do."""


def color(k: int) -> tuple[int, int, int]:
    return PALETTE[k % len(PALETTE)]

"""Progress bars that print whole lines: what a Ray worker's output needs.

A worker's stderr reaches the driver line by line, each prefixed ``(task pid=...)``. tqdm redraws
in place with carriage returns, which the driver showed as empty prefixed lines (36 of them in
one demo run). :class:`LineWriter` turns every redraw into one full, non-empty line.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO


class LineWriter:
    """A file for tqdm: each carriage-return-separated redraw becomes its own line; blank ones are dropped."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def write(self, text: str) -> int:
        out = self.stream or sys.stderr
        for part in re.split(r"[\r\n]+", text):
            if part.strip():
                out.write(part.strip() + "\n")
        return len(text)

    def flush(self) -> None:
        (self.stream or sys.stderr).flush()


def line_bar(**kwargs):
    """A tqdm bar that prints whole lines (``kwargs``: tqdm's)."""
    from tqdm import tqdm

    return tqdm(file=LineWriter(), dynamic_ncols=False, ncols=100, **kwargs)

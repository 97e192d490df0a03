"""The Drag page's segmenter: SAM from a configured checkpoint or the GrabCut fallback, shared and memoised."""

from __future__ import annotations

import threading

import streamlit as st


@st.cache_resource(show_spinner=False)
def segmenter_for(checkpoint: str | None, model_type: str):
    """(segmenter, what the page says about it, a problem to show or None)."""
    from model.segmentation import GrabCutSegmenter, make_segmenter

    if not checkpoint:
        return GrabCutSegmenter(), "OpenCV GrabCut seeded by your clicks (the fallback: no SAM checkpoint is configured, set `drag.sam_checkpoint`)", None
    try:
        return make_segmenter(checkpoint, model_type), f"SAM {model_type} (`{checkpoint}`)", None
    except (FileNotFoundError, ValueError) as err:
        return GrabCutSegmenter(), "OpenCV GrabCut seeded by your clicks (SAM could not be loaded)", str(err)


@st.cache_resource(show_spinner=False)
def segmenter_lock() -> threading.Lock:
    """One segmentation at a time: the segmenter (SAM's cached embedding) is shared by every session."""
    return threading.Lock()


class MemoSegmenter:
    """The session's segmenter with results kept per click set (GrabCut takes a second; reruns are many)."""

    KEEP = 24  # results kept per session (each holds image-sized masks)

    def __init__(self, inner, memo: dict):
        self.inner, self.memo, self.name = inner, memo, getattr(inner, "name", "?")

    def segment(self, image, positive, negative=(), **kw):
        key = (tuple(map(tuple, positive)), tuple(map(tuple, negative)), tuple(sorted(kw.items())))
        if key not in self.memo:
            with segmenter_lock():
                self.memo[key] = self.inner.segment(image, positive, negative, **kw)
            while len(self.memo) > self.KEEP:
                self.memo.pop(next(iter(self.memo)))
        return self.memo[key]

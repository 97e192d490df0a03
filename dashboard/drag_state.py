"""The Drag page's session state: each entity's clicks and path, the active entity and click mode, and the
callbacks the page's buttons and clickable image run (Streamlit calls them before the rerun)."""

from __future__ import annotations

import streamlit as st

from core.geometry import scale_points
from tasks import drag as dg

S = "drag_state"  # the session's clicks: {"key", "entities": [...], "seg": {...}}
FLASH = "drag_flash"
RESULT = "drag_result"
MODES = {"select": "Select (click on it)", "exclude": "Exclude (click off it)", "path": "Path (click where it goes)"}


def flash(kind: str, text: str) -> None:
    st.session_state[FLASH] = (kind, text)


def new_entity(camera: bool = False) -> dict:
    return {"positive": [], "negative": [], "path": [], "camera": camera, "choice": None}


def state() -> dict:
    return st.session_state[S]


def active() -> dict:
    s = state()
    return s["entities"][st.session_state.get("drag_active", 0)]


# ----------------------------------------------------------------------------- callbacks
def cb_new_entity(max_entities: int, camera: bool = False) -> None:
    s = state()
    if len(s["entities"]) >= max_entities:
        flash("error", f"At most {max_entities} entities can be controlled in one video (drag.max_entities); remove one first.")
        return
    if camera and any(e["camera"] for e in s["entities"]):
        flash("warning", "The whole image (camera motion) is already an entity; draw its path, or remove it first.")
        return
    s["entities"].append(new_entity(camera))
    st.session_state["drag_active"] = len(s["entities"]) - 1
    st.session_state["drag_mode"] = "path" if camera else "select"


def cb_remove_entity() -> None:
    s = state()
    k = st.session_state.get("drag_active", 0)
    del s["entities"][k]
    if not s["entities"]:
        s["entities"].append(new_entity())
    st.session_state["drag_active"] = max(0, min(k, len(s["entities"]) - 1))
    st.session_state.pop(RESULT, None)


def cb_undo() -> None:
    e = active()
    mode = st.session_state.get("drag_mode", "select")
    lst = {"select": e["positive"], "exclude": e["negative"], "path": e["path"]}[mode]
    if lst:
        lst.pop()
    else:
        flash("info", f"Nothing to undo in {MODES[mode].split(' (')[0]} mode for this entity.")


def cb_clear() -> None:
    e = active()
    e.update({k: [] for k in ("positive", "negative", "path")})


def add_points(points: list[tuple[float, float]]) -> None:
    """Clicks (image pixels) for the active entity in the current mode."""
    e = active()
    mode = st.session_state.get("drag_mode", "select")
    if mode in ("select", "exclude") and e["camera"]:
        flash("warning", "This entity is the whole image (camera motion): it needs no selection. Switch to Path and click where the view should move.")
        return
    target = {"select": e["positive"], "exclude": e["negative"], "path": e["path"]}[mode]
    target.extend((round(float(x), 1), round(float(y), 1)) for x, y in points)
    if mode == "select" and len(e["positive"]) == len(points) and not e["path"]:
        # The first click on a new entity is where it is grabbed: its path starts there, and goes on in Path mode.
        e["path"].append(e["positive"][0])
        st.session_state["drag_mode"] = "path"


def cb_click(key: str, hw: tuple[int, int]) -> None:
    value = st.session_state.get(key)
    if not value or "x" not in value:
        return
    s = state()
    stamp = value.get("unix_time")
    if stamp is not None and stamp == s.get("last_click"):
        return
    s["last_click"] = stamp
    H, W = hw
    shown_hw = (max(float(value.get("height") or H), 1.0), max(float(value.get("width") or W), 1.0))
    x, y = scale_points([float(value["x"]), float(value["y"])], shown_hw, hw)
    add_points([(x, y)])


def cb_typed() -> None:
    text = st.session_state.get("drag_points", "")
    try:
        pts = dg.parse_points(text, "the typed points")
    except dg.DragError as err:
        flash("error", str(err))
        return
    add_points(pts)
    st.session_state["drag_points"] = ""

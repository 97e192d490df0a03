"""Drag: click an entity (SAM or GrabCut gives its mask), click along its path, generate the video.

The logic lives in ``tasks.drag`` (shared with ``draganything drag``: both generate with
``tasks.drag.run_drag``); the clicks live in the session (``dashboard/drag_state.py``); this page draws them, and runs the generation as a Ray task (or in
this process with ``drag.executor: inline``). The config profile comes from
``-- --config NAME`` after ``streamlit run`` or $DRAGANYTHING_CONFIG (default: tiny).
Videos are written under ``<workdir>/drag/`` at paths derived from the case's digest.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import streamlit as st

from core.config import ConfigError, load_config
from core.geometry import rescale
from core.media import load_cached_clip
from dashboard import auth, media, queries, ui
from dashboard.drag_state import FLASH, MODES, RESULT, S, active, cb_clear, cb_click, cb_new_entity, cb_remove_entity, cb_typed, cb_undo, new_entity, state
from dashboard.segmenting import MemoSegmenter, segmenter_for
from tasks import drag as dg
from tasks.controller import checkpoint_model_settings

log = logging.getLogger(__name__)

ENV_CONFIG = "DRAGANYTHING_CONFIG"
DISPLAY_SIDE = 640

try:  # a well-kept click component; without it the page still works with typed points
    from streamlit_image_coordinates import streamlit_image_coordinates
except ImportError:  # pragma: no cover - depends on the environment
    streamlit_image_coordinates = None


# ----------------------------------------------------------------------------- setup
def config_name() -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.config or os.environ.get(ENV_CONFIG) or "tiny"


@st.cache_data(show_spinner=False, max_entries=4)
def load_upload(data: bytes, max_side: int, aspect: tuple[int, int] | None, name: str) -> dg.WorkImage:
    """Decode and prepare an upload once (a large JPEG takes a while to decode, and reruns are many)."""
    return dg.load_image(data, max_side, aspect, name=name)


@st.cache_data(show_spinner=False, max_entries=8)
def case_zip(case_id: str, name: str, _case: dg.DragCase) -> bytes:
    return dg.case_zip(_case, name)


# ----------------------------------------------------------------------------- the page
st.title("Drag")
url = ui.workdir_or_stop()
wd = queries.get_workdir(url)
try:
    cfg = load_config(config_name())
except ConfigError as err:
    st.error(f"The dashboard's config is invalid: {err}")
    st.stop()

st.caption(
    "Click an entity to select it, click along where it should go, and generate a video with a trained controller. "
    "Several entities move at once; the whole image moves the camera."
)
segmenter, seg_text, seg_problem = segmenter_for(cfg.drag.sam_checkpoint, cfg.drag.sam_model_type)
if seg_problem:
    st.warning(f"{seg_problem}. Using the GrabCut fallback instead.")

# -- checkpoint
trained = dg.trained_checkpoints(wd)
ckpt_ids = [r["checkpoint_id"] for r in trained]
c1, c2 = st.columns([2, 3])
with c1:
    ckpt_id = ui.pick(
        "Checkpoint", ckpt_ids, key="drag_checkpoint",
        format_func=lambda c: next(f"{c} · step {int(r['step'])} · {ui.fmt_time(r['created_at'])}" for r in trained if r["checkpoint_id"] == c),
    )
with c2:
    st.markdown(f"**Segmentation:** {seg_text}")
checkpoint = next((r for r in trained if r["checkpoint_id"] == ckpt_id), None)
if checkpoint is None:
    st.warning(
        f"This workdir has no trained checkpoint yet, so nothing can be generated: train one first "
        f"(`draganything train --workdir {url}` or `draganything pipeline --workdir {url}`). "
        "You can still select entities and draw paths."
    )
model = cfg.model if checkpoint is None else checkpoint_model_settings(checkpoint)  # what the controller was trained with
height, width, num_frames = model.height, model.width, model.num_frames
TINY_NOTE = (f"{width}x{height} tiny model: the embedded SVD-shaped model the demo trains on CPU, so its videos are small and "
             "blurry by design; set `model.base_model_path` to a real Stable Video Diffusion for real videos.")
if not getattr(model, "base_model_path", None):
    st.info(TINY_NOTE, icon=":material/info:")

# -- 1. the image
st.subheader("1. Image")
labels_idx = queries.read(url, "labels", columns=["dataset", "split", "video_id", "frames_path"])
labels_idx = labels_idx.dropna(subset=["frames_path"]).drop_duplicates(["dataset", "split", "video_id"])
sources = ["Upload an image"] + (["A suite item's first frame"] if not labels_idx.empty else [])
source = st.radio("Source", sources, horizontal=True, key="drag_source", label_visibility="collapsed")
crop = st.checkbox(
    f"Centre-crop to the model's aspect ratio ({width}x{height})", value=cfg.drag.crop_to_model_aspect, key="drag_crop",
    help="Otherwise the image is stretched to the model's size and the video stretched back.",
)
aspect = (height, width) if crop else None
work: dg.WorkImage | None = None
try:
    if source == "Upload an image":
        up = st.file_uploader("Image", type=list(dg.IMAGE_TYPES), key="drag_upload", label_visibility="collapsed")
        if up is not None:
            work = load_upload(up.getvalue(), cfg.drag.max_image_side, aspect, f"'{up.name}'")
    else:
        labels_idx["label"] = labels_idx["dataset"] + " / " + labels_idx["split"] + " / " + labels_idx["video_id"]
        choice = ui.pick("Suite item", sorted(labels_idx["label"]), key="drag_item")
        row = labels_idx[labels_idx["label"] == choice].iloc[0]
        frames, _ = load_cached_clip(wd, row["frames_path"])
        work = dg.prepare_image(frames[0], cfg.drag.max_image_side, aspect, name=f"item {row['video_id']}")
except dg.DragError as err:
    st.error(str(err))
    st.stop()
except (FileNotFoundError, OSError, KeyError, ValueError) as err:
    st.error(f"The suite item's first frame cannot be read ({err}); run the labels stage again for it.")
    st.stop()
if work is None:
    st.info("Upload an image (PNG, JPEG, WebP, BMP, TIFF) to start" + (", or pick a suite item." if len(sources) > 1 else "."))
    st.stop()
for note in work.notes:
    st.info(note)

image = work.image
H, W = image.shape[:2]
image_key = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()[:16]
if st.session_state.get(S, {}).get("key") != image_key:
    st.session_state[S] = {"key": image_key, "entities": [new_entity()], "seg": {}, "last_click": None}
    st.session_state["drag_active"] = 0
    st.session_state["drag_mode"] = "select"
    st.session_state.pop(RESULT, None)
s = state()
memo_seg = MemoSegmenter(segmenter, s["seg"])

# -- 2. entities and paths
st.subheader("2. Entities and paths")
if FLASH in st.session_state:
    kind, text = st.session_state.pop(FLASH)
    getattr(st, kind)(text)

n_ent = len(s["entities"])
if st.session_state.get("drag_active", 0) >= n_ent:
    st.session_state["drag_active"] = n_ent - 1
left, right = st.columns([3, 2])
with right:
    st.radio(
        "Entity", list(range(n_ent)), key="drag_active", horizontal=True,
        format_func=lambda k: f"{k + 1}" + (" · camera" if s["entities"][k]["camera"] else ""),
    )
    st.radio("Click mode", list(MODES), key="drag_mode", format_func=MODES.get, horizontal=False)
    b1, b2 = st.columns(2)
    b1.button("New entity", key="drag_new", on_click=cb_new_entity, args=(cfg.drag.max_entities,), icon=":material/add:", width="stretch")
    b2.button("Whole image", key="drag_camera", on_click=cb_new_entity, args=(cfg.drag.max_entities, True),
              icon=":material/videocam:", help="A new entity that is the whole frame: its path moves the camera", width="stretch")
    b3, b4, b5 = st.columns(3)
    b3.button("Undo", key="drag_undo", on_click=cb_undo, icon=":material/undo:", help="Remove the last click of the current mode", width="stretch")
    b4.button("Clear", key="drag_clear", on_click=cb_clear, icon=":material/clear:", help="Remove this entity's clicks and path", width="stretch")
    b5.button("Remove", key="drag_remove", on_click=cb_remove_entity, icon=":material/delete:", help="Remove this entity", width="stretch")
    status_box = st.container()
    with st.form("drag_typed", clear_on_submit=False, border=False):
        st.text_input("Or type points (image pixels)", key="drag_points", placeholder="x,y  x,y ...",
                      help="Added to the active entity in the current click mode, in order.")
        st.form_submit_button("Add points", on_click=cb_typed)
    anchor = st.checkbox(
        "Start each path at the entity's centre", value=True, key="drag_anchor",
        help="The model was trained to move an entity's inscribed-circle centre. The path keeps its shape and length, "
        "so the point you grabbed follows the path. Off: the points are used exactly as clicked.",
    )
    if memo_seg.name.startswith("sam"):
        choices = {None: "SAM's best", 0: "small", 1: "medium", 2: "large"}
        e = active()
        picked = st.selectbox("SAM mask", list(choices), index=list(choices).index(e["choice"]), format_func=choices.get,
                              key=f"drag_choice_{image_key}_{st.session_state['drag_active']}")
        e["choice"] = picked

# resolve what can be resolved: masks of selected entities, trajectories of those with paths
overlays, entities, problems, todo, notes = [], [], [], [], list(work.notes)
for k, spec in enumerate(s["entities"]):
    label = f"entity {k + 1}"
    ov = dg.Overlay(positive=spec["positive"], negative=spec["negative"], path=spec["path"], camera=spec["camera"],
                    active=k == st.session_state.get("drag_active", 0))
    overlays.append(ov)
    espec = dg.EntitySpec(list(spec["positive"]), list(spec["negative"]), list(spec["path"]), spec["camera"], spec["choice"])
    selected = bool(spec["camera"] or spec["positive"])
    if not selected and not spec["path"]:
        continue  # an entity not started yet is left out
    if not selected:
        todo.append(f"Entity {k + 1} has a path but no selection: click on it in Select mode.")
        continue
    try:
        ov.mask = dg.segment_spec(memo_seg, image, espec, label).mask
    except dg.DragError as err:
        problems.append(str(err))
        continue
    if not spec["path"]:
        todo.append(f"Entity {k + 1} is selected but has no path: click where it should go (Path mode; one point keeps it still).")
        continue
    ent = dg.resolve_entity(memo_seg, image, espec, label, anchor, notes)
    ov.trajectory = ent.trajectory
    entities.append(ent)

with status_box:
    lines = []
    for k, spec in enumerate(s["entities"]):
        ov = overlays[k]
        what = ("the whole image (camera)" if spec["camera"] else
                f"{len(spec['positive'])} click(s)" + (f", {len(spec['negative'])} excluded" if spec["negative"] else "")
                + (f" → mask {ov.mask.mean():.0%} of the image" if ov.mask is not None else ""))
        n = len(spec["path"])
        lines.append(f"**{k + 1}** · {what} · path: {n} point(s)" + (" (stays still: click where it goes)" if n == 1 else ""))
    st.markdown("  \n".join(lines))

with left:
    shown = dg.render_overlay(image, overlays, width=int(round(DISPLAY_SIDE * min(1.0, W / H))))
    if streamlit_image_coordinates is not None:
        click_key = f"drag_click_{image_key}"
        streamlit_image_coordinates(
            shown, key=click_key, width="stretch", image_format="JPEG", jpeg_quality=90, cursor="crosshair",
            on_click=lambda: cb_click(click_key, (H, W)),
        )
        st.caption(
            f"{W}x{H} px. Click on the image: **Select** adds a click on the active entity (its mask is tinted), "
            "**Exclude** marks a point that is not part of it, **Path** adds the next point of its path. The first click on a new "
            "entity is where it is grabbed: its path starts there and the mode switches to Path. The thick line is the path "
            "the model gets (PCHIP), the arrow its end."
        )
    else:
        st.image(shown, width="stretch")
        st.caption(f"{W}x{H} px. Install `streamlit-image-coordinates` to click on the image; until then type the points on the right.")

for p in problems:
    st.warning(p)
for t in todo:
    st.info(t)
if not entities and not problems and not todo:
    st.info("Click on the entity to move (or press **Whole image** to move the camera), then click along its path.")
model_notes: list[str] = []
case = dg.DragCase(image, entities, notes, name=image_key) if entities else None
if case is not None:
    model_notes = case.model_notes(height, width)
for note in dict.fromkeys(notes[len(work.notes):] + model_notes):
    st.warning(note)

# -- 3. what the model sees
st.subheader("3. What the model sees")
if case is None:
    st.info("Select an entity and click its path to see the maps the controller will be given.")
else:
    frame = st.slider("Frame", 0, num_frames - 1, 0, key="drag_frame") if num_frames > 1 else 0
    view = dg.model_view(case, height, width, num_frames, frame,
                         sigma_ratio=model.gaussian_sigma_ratio, support_ratio=model.gaussian_support_ratio)
    side = 300
    scale = side / max(height, width)
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    first = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    at_t = dg.render_overlay(first, [dg.Overlay(trajectory=view.centers[:, k], camera=e.camera) for k, e in enumerate(case.entities)], width=size[0])
    for k in range(len(case.entities)):
        c = view.centers[frame, k]
        cx, cy = rescale(c, scale)
        cv2.circle(at_t, (int(round(cx)), int(round(cy))), max(2, int(round(view.radii[k] * scale))), dg.color(k), 2, cv2.LINE_AA)
    m1, m2, m3 = st.columns(3)
    m1.image(at_t, caption=f"Frame {frame}: each entity's centre and inscribed circle on its path ({width}x{height}, {num_frames} frames)")
    m2.image(cv2.resize(dg.heat_rgb(view.gaussian), size, interpolation=cv2.INTER_NEAREST), caption=f"2D Gaussian map (sigma = {model.gaussian_sigma_ratio:g} r)")
    m3.image(cv2.resize(view.entity, size, interpolation=cv2.INTER_NEAREST),
             caption="Entity map: each entity's feature vector painted in its circle (shown as its colour)")

# -- 4. generate
st.subheader("4. Generate")
g1, g2, g3 = st.columns([1, 1, 2])
seed = int(g1.number_input("Seed", min_value=0, value=0, step=1, key="drag_seed"))
steps = int(g2.number_input("Denoising steps", min_value=1, max_value=200, value=int(cfg.generate.num_inference_steps), step=1, key="drag_steps"))
may_drag, not_allowed = auth.drag_permission()  # generating and saving write into the workdir: voters only
ready = checkpoint is not None and case is not None and not problems and not todo and may_drag
go = g3.button("Generate", key="drag_generate", type="primary", disabled=not ready, icon=":material/movie:")
if not may_drag:
    st.warning(not_allowed)
elif not ready:
    why = ("train a checkpoint first" if checkpoint is None else
           "select an entity and give it a path" if case is None else "fix or finish the entities above")
    st.caption(f"Generate is available once everything is in place ({why}).")

if go and ready:
    try:
        dg.check_count(len(case.entities), cfg.drag.max_entities)
        gen_cfg = load_config(config_name(), {"generate.num_inference_steps": steps})
        relpath = dg.video_relpath(case.case_id(), checkpoint["checkpoint_id"], seed, steps,
                                   {"generate": gen_cfg.generate.model_dump(mode="json"), "config_hash": checkpoint.get("config_hash")})
        if wd.exists(relpath):
            st.session_state[RESULT] = {"relpath": relpath, "case": case.case_id(), "note": "generated earlier with the same inputs"}
        else:
            item = case.to_item(num_frames)
            bar = st.progress(0.0, text="starting")
            t0 = time.perf_counter()

            def show(stage: str, done: int, total: int) -> None:
                frac = 0.0 if not total else min(1.0, done / total)
                text = f"{stage} {done}/{total}" if stage == "denoising" else stage
                bar.progress(frac, text=f"{text} · {time.perf_counter() - t0:.0f} s")

            if cfg.drag.executor == "ray":
                # Ray's start takes seconds (25 s on a busy 2-core box): it runs beside a live timer
                with ThreadPoolExecutor(1) as pool:
                    starting = pool.submit(dg.submit, url, checkpoint, item, gen_cfg, seed, relpath)
                    while not starting.done():
                        show("starting Ray", 0, steps)
                        time.sleep(0.25)
                    job = starting.result()
                try:  # a rerun (any click) stops this loop; the task still finishes and its video is reused
                    while not job.wait(0.4):
                        p = job.progress()
                        show(p["stage"], p["done"], p["total"] or steps)
                    out = job.result()
                finally:
                    job.close()
            else:
                out = dg.run_drag(url, checkpoint, item, gen_cfg, seed, relpath, show)
            bar.progress(1.0, text=f"done in {time.perf_counter() - t0:.1f} s")
            st.session_state[RESULT] = {"relpath": out["video_path"], "case": case.case_id(),
                                        "note": f"{out['frames']} frames, {out['width']}x{out['height']}, {out['seconds']:.1f} s"}
    except dg.DragError as err:
        st.error(str(err))
    except Exception as err:  # noqa: BLE001 - one sentence on the page, the traceback in the server log
        log.exception("drag generation failed")
        st.error(f"Generation failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} (details in the dashboard's log)")

result = st.session_state.get(RESULT)
if result and case is not None and result["case"] == case.case_id():
    v1, v2 = st.columns([3, 2])
    with v1:
        tiny = "" if getattr(model, "base_model_path", None) else f" · {width}x{height} tiny model"
        if ui.show_video(url, result["relpath"], caption=f"`{result['relpath']}` · {result['note']}{tiny}"):
            try:
                full = media.resolve_media(wd, result["relpath"])
                data = open(full, "rb").read() if wd.is_local else wd.fs.cat_file(full)
                st.download_button("Download the video", data, file_name=Path(result["relpath"]).name, mime="video/mp4",
                                   key="drag_download", icon=":material/download:")
            except (media.MediaError, OSError) as err:
                st.error(str(err))

# -- 5. save the case
st.subheader("5. Save the case")
if case is None or problems or todo:
    st.caption("Once the entities and paths are complete, the case can be saved in the user-study folder format (demo.jpg, demo.json, masks).")
else:
    root = dg.cases_root(cfg, wd)
    s1, s2 = st.columns([2, 3])
    name = s1.text_input("Case name", value=f"drag-{case.case_id()}", key="drag_case_name")
    with s2:
        st.caption(f"Saved into `{root}`, the user-study suite's format (add it with `evaluate.user_study_dir`).")
        bs1, bs2 = st.columns(2)
        save = bs1.button("Save case", key="drag_save", icon=":material/save:", disabled=not may_drag)
        try:
            safe = dg.check_case_name(name)
            bs2.download_button("Download case (.zip)", case_zip(case.case_id(), safe, case), file_name=f"{safe}.zip", mime="application/zip",
                                key="drag_case_zip", icon=":material/folder_zip:")
        except dg.DragError:
            safe = None
    if save:
        try:
            if not may_drag:
                raise dg.DragError(not_allowed)
            safe = dg.check_case_name(name)
            if "://" in root or not (cfg.drag.cases_dir or cfg.evaluate.user_study_dir or wd.is_local):
                raise dg.DragError(f"cases can only be saved to a local folder here ({root} is not one); download the zip instead")
            folder = dg.save_case(Path(root) / safe, case)
            st.success(f"Saved to `{folder}`.")
        except dg.DragError as err:
            st.error(str(err))

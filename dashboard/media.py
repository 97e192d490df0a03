"""Videos for the pages: safe path resolution, trajectory overlays (H.264 by ``core.media.write_mp4``).

Every path handled here comes from a table row (``samples.video_path``), never from
a request: :func:`resolve_media` still refuses anything that is absolute or
escapes the workdir, so a bad row cannot expose other files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np

from core.geometry import scale_points
from core.media import write_mp4
from core.tables import PathError, Workdir

CACHE_RELDIR = "cache/dashboard"
GT_COLOR = (40, 220, 90)  # RGB
TRACK_COLOR = (255, 70, 70)


class MediaError(ValueError):
    """A media path that must not or cannot be served."""


def resolve_media(wd: Workdir, relpath: str) -> str:
    """Absolute path of a table's relative media path, confined to the workdir (``Workdir.path``'s one rule)."""
    if not isinstance(relpath, str) or not relpath.strip():
        raise MediaError("the table row has no media path")
    try:
        full = wd.path(relpath)
    except PathError as err:
        raise MediaError(f"media path {relpath!r}: {err}") from None
    if wd.is_local:
        real = os.path.realpath(full)
        if not os.path.isfile(real):
            raise MediaError(f"video {relpath!r} is listed in the tables but missing from the workdir ({real})")
        return real
    if not wd.fs.exists(full):
        raise MediaError(f"video {relpath!r} is listed in the tables but missing from the workdir ({full})")
    return full


def read_video(wd: Workdir, relpath: str) -> tuple[np.ndarray, float]:
    """Frames (T, H, W, 3) uint8 RGB and fps."""
    import imageio.v3 as iio

    path = resolve_media(wd, relpath)
    data = wd.fs.cat_file(path) if not wd.is_local else None
    src = data if data is not None else path
    try:
        frames = iio.imread(src, index=None, plugin="pyav", extension=".mp4" if data is not None else None)
        meta = iio.immeta(src, plugin="pyav", extension=".mp4" if data is not None else None)
    except Exception as err:  # noqa: BLE001 - any decoder failure is one message for the page
        raise MediaError(f"could not decode video {relpath!r}: {err}") from None
    fps = float(meta.get("fps") or 8.0)
    return np.asarray(frames)[..., :3], fps


@dataclass(frozen=True)
class Track:
    """A trajectory to draw: points (T, 2) in video pixels, which frames it is valid on."""

    points: np.ndarray
    visible: np.ndarray
    color: tuple[int, int, int]
    label: str = ""
    radius: float = 4.0  # the entity's first-frame incircle radius, video pixels


DISPLAY_SIDE = 384  # px: the longer side every study/compare video is shown at
UPSCALE = cv2.INTER_CUBIC  # the one filter that brings every video to the display size
MOVING_PX = 1.5  # an entity whose path stays within this many video pixels of its start is not drawn


def display_size(video_hw: tuple[int, int], side: int = DISPLAY_SIDE) -> tuple[int, int]:
    """(H, W) of the display box for a video of ``video_hw``: longer side ``side``, even sizes."""
    h, w = video_hw
    s = side / max(h, w)
    return max(2, round(h * s / 2) * 2), max(2, round(w * s / 2) * 2)


def resize_frames(frames: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Frames (T, H, W, 3) at ``hw`` with :data:`UPSCALE`, the same filter for every video."""
    if frames.shape[1:3] == tuple(hw):
        return frames.copy()
    return np.stack([cv2.resize(f, (hw[1], hw[0]), interpolation=UPSCALE) for f in frames])


def moving(tracks: list[Track], min_px: float = MOVING_PX) -> list[Track]:
    """The tracks whose path leaves a ``min_px`` disc around its start (still entities are not drawn)."""
    out = []
    for tr in tracks:
        pts = np.asarray(tr.points, float)
        if len(pts) and float(np.max(np.linalg.norm(pts - pts[0], axis=1))) > min_px:
            out.append(tr)
    return out


def draw_tracks(frames: np.ndarray, tracks: list[Track]) -> np.ndarray:
    """Overlays drawn on display-size frames, so they stay thin: the path as a 1-px line, a hollow
    ring of the entity's size where it should be at frame t, and on the first frame an arrow
    along the whole path (the paper's figures). The object itself is never covered."""
    out = frames.copy()
    H, W = frames.shape[1:3]
    for t in range(len(out)):
        img = np.ascontiguousarray(out[t])
        for tr in tracks:
            pts = np.asarray(tr.points, float)
            n = min(len(pts), len(out))
            if n == 0:
                continue
            ip = np.round(pts[:n]).astype(np.int32)
            faint = tuple(int(c * 0.6) for c in tr.color)
            cv2.polylines(img, [ip.reshape(-1, 1, 2)], False, faint if t else tr.color, 1, cv2.LINE_AA)
            k = min(t, n - 1)
            if t == 0 and n > 1:
                tip = max(6.0, 0.04 * min(H, W)) / max(1.0, float(np.linalg.norm(ip[-1] - ip[-2])))
                cv2.arrowedLine(img, tuple(int(v) for v in ip[-2]), tuple(int(v) for v in ip[-1]), tr.color, 2, cv2.LINE_AA, tipLength=min(tip, 3.0))
            ring = max(4, round(tr.radius))
            vis = bool(tr.visible[k]) if len(tr.visible) > k else True
            centre = (int(ip[k, 0]), int(ip[k, 1]))
            cv2.circle(img, centre, ring, tr.color if vis else faint, 1, cv2.LINE_AA)
        out[t] = img
    return out


def cache_dir(wd: Workdir) -> str:
    """Where rendered overlays live: ``<workdir>/cache/dashboard`` if writable, else a temp dir."""
    if wd.is_local:
        d = wd.local_path(CACHE_RELDIR)
        try:
            os.makedirs(d, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            pass
    d = os.path.join(tempfile.gettempdir(), "draganything-dashboard-cache", hashlib.sha1(wd.url.encode()).hexdigest()[:12])
    os.makedirs(d, exist_ok=True)
    return d


def scaled(tracks: list[Track], from_hw: tuple[int, int], to_hw: tuple[int, int]) -> list[Track]:
    """``tracks`` (video pixels of ``from_hw``) in the pixels of ``to_hw``, radii too."""
    s = min(to_hw[0] / from_hw[0], to_hw[1] / from_hw[1])
    return [Track(scale_points(np.asarray(t.points, float), from_hw, to_hw), t.visible, t.color, t.label, t.radius * s) for t in tracks]


def display_video(wd: Workdir, relpath: str, hw: tuple[int, int], tracks: list[Track] | None = None, tag: str = "") -> str:
    """Path of an H.264 copy of the video at display size ``hw`` (filter :data:`UPSCALE`), with
    ``tracks`` (in the video's own pixels) drawn at that size; rendered once, then cached.

    The cache key covers the source file (path, size, mtime), the size and the tracks, so a
    regenerated sample or new labels give a new file.
    """
    tracks = tracks or []
    src = resolve_media(wd, relpath)
    st_ = wd.fs.info(src)
    key = json.dumps(
        {
            "src": relpath,
            "size": st_.get("size"),
            "mtime": str(st_.get("mtime") or st_.get("LastModified")),
            "hw": list(hw),
            "tracks": [[np.round(np.asarray(t.points, float), 2).tolist(), np.asarray(t.visible, bool).tolist(), t.color, t.radius] for t in tracks],
            "tag": tag,
            "v": 3,
        },
        sort_keys=True,
    )
    out = os.path.join(cache_dir(wd), hashlib.sha256(key.encode()).hexdigest()[:24] + ".mp4")
    if os.path.isfile(out):
        return out
    frames, fps = read_video(wd, relpath)
    big = resize_frames(frames, hw)
    if tracks:
        big = draw_tracks(big, scaled(tracks, frames.shape[1:3], hw))
    write_mp4(Workdir(os.path.dirname(out)), os.path.basename(out), big, fps)
    return out


def label_tracks(label_rows, video_hw: tuple[int, int], entity_ids=None, color=GT_COLOR) -> list[Track]:
    """Ground-truth tracks of a video's labelled entities, scaled to the video's size."""
    tracks = []
    for r in label_rows.itertuples(index=False):
        if entity_ids is not None and int(r.entity_id) not in entity_ids:
            continue
        pts = np.array([list(p) for p in r.centers], float)
        if pts.size == 0:
            continue
        pts = scale_points(pts, (int(r.height), int(r.width)), video_hw)
        vis = np.array(list(r.visible), bool) if r.visible is not None else np.ones(len(pts), bool)
        radii = list(r.radii) if r.radii is not None else []
        radius = float(radii[0]) * min(video_hw[0] / int(r.height), video_hw[1] / int(r.width)) if radii else 4.0
        tracks.append(Track(pts, vis, color, f"entity {r.entity_id}", radius))
    return tracks


def condition_tracks(cond, video_hw: tuple[int, int], color=GT_COLOR) -> list[Track]:
    """The paths a video was asked to follow (a ``conditions`` row, item pixels), scaled to the video's size."""
    item_hw = (int(cond["height"]), int(cond["width"]))
    tracks = []
    radii = list(cond["radii"]) if cond["radii"] is not None else []
    vis_all = list(cond["visible"]) if cond["visible"] is not None else []
    for k, (eid, traj) in enumerate(zip(cond["entity_ids"], cond["trajectories"])):
        pts = scale_points(np.array([list(p) for p in traj], float), item_hw, video_hw)
        vis = np.array(list(vis_all[k]), bool) if k < len(vis_all) else np.ones(len(pts), bool)
        radius = float(radii[k]) * min(video_hw[0] / item_hw[0], video_hw[1] / item_hw[1]) if k < len(radii) else 4.0
        tracks.append(Track(pts, vis, color, f"entity {eid}", radius))
    return tracks


def stored_tracks(objmc_rows, seed: int, video_hw: tuple[int, int], color=TRACK_COLOR) -> list[Track]:
    """The tracks the evaluate stage measured for one seed's video (``objmc.tracks``), at the video's size."""
    out = []
    for r in objmc_rows.itertuples(index=False):
        seeds = list(r.seeds) if r.seeds is not None else []
        if seed not in seeds or r.tracks is None:
            continue
        pts = np.array([list(p) for p in r.tracks[seeds.index(seed)]], float)
        if pts.size == 0:
            continue
        pts = scale_points(pts, (int(r.video_height), int(r.video_width)), video_hw)
        out.append(Track(pts, np.ones(len(pts), bool), color, f"measured entity {r.entity_id}"))
    return out


def probe(path: str) -> tuple[int, float]:
    """(frame count, fps) of a local video file."""
    import imageio.v3 as iio

    try:
        props = iio.improps(path, plugin="pyav")
        meta = iio.immeta(path, plugin="pyav")
    except Exception as err:  # noqa: BLE001 - any decoder failure is one message for the page
        raise MediaError(f"could not read video {path!r}: {err}") from None
    return int(props.shape[0]), float(meta.get("fps") or 8.0)

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


def draw_tracks(frames: np.ndarray, tracks: list[Track]) -> np.ndarray:
    """Each track as a thin full path, the part travelled so far thicker, and a dot at frame t."""
    out = frames.copy()
    H, W = frames.shape[1:3]
    thick = max(1, round(min(H, W) / 160))
    for t in range(len(out)):
        img = np.ascontiguousarray(out[t])
        for tr in tracks:
            pts = np.asarray(tr.points, float)
            n = min(len(pts), len(out))
            if n == 0:
                continue
            ip = np.round(pts[:n]).astype(np.int32)
            faint = tuple(int(c * 0.55) for c in tr.color)
            cv2.polylines(img, [ip.reshape(-1, 1, 2)], False, faint, thick, cv2.LINE_AA)
            k = min(t, n - 1)
            if k > 0:
                cv2.polylines(img, [ip[: k + 1].reshape(-1, 1, 2)], False, tr.color, thick + 1, cv2.LINE_AA)
            vis = bool(tr.visible[k]) if len(tr.visible) > k else True
            centre = (int(ip[k, 0]), int(ip[k, 1]))
            if vis:
                cv2.circle(img, centre, thick + 3, tr.color, -1, cv2.LINE_AA)
            else:
                cv2.circle(img, centre, thick + 3, tr.color, 1, cv2.LINE_AA)
            cv2.circle(img, (int(ip[n - 1, 0]), int(ip[n - 1, 1])), thick + 2, (255, 255, 255), 1, cv2.LINE_AA)  # the goal
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


def overlay_video(wd: Workdir, relpath: str, tracks: list[Track], tag: str = "") -> str:
    """Path of an H.264 copy of the video with the tracks drawn; rendered once, then cached.

    The cache key covers the source file (path, size, mtime) and the tracks, so a
    regenerated sample or new labels give a new file.
    """
    src = resolve_media(wd, relpath)
    st_ = wd.fs.info(src)
    key = json.dumps(
        {
            "src": relpath,
            "size": st_.get("size"),
            "mtime": str(st_.get("mtime") or st_.get("LastModified")),
            "tracks": [[np.round(np.asarray(t.points, float), 2).tolist(), np.asarray(t.visible, bool).tolist(), t.color] for t in tracks],
            "tag": tag,
            "v": 2,
        },
        sort_keys=True,
    )
    out = os.path.join(cache_dir(wd), hashlib.sha256(key.encode()).hexdigest()[:24] + ".mp4")
    if os.path.isfile(out):
        return out
    frames, fps = read_video(wd, relpath)
    write_mp4(Workdir(os.path.dirname(out)), os.path.basename(out), draw_tracks(frames, tracks), fps)
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

"""The embedded sample dataset: semi-synthetic videos in the real VIPSeg layout.

Entities are textured shapes cut from real photographs (scikit-image ships them)
moving over real-photo backgrounds along known smooth paths, so every label the
pipeline computes can be checked against the truth this module writes. The scenes
cover what real data throws at the pipeline: a camera pan (the stuff moves with
it), a stuff band with its own motion (water), a thing passing behind another
(partial occlusion), a thing leaving the frame, and a tiny thing.

Truth, per video, in ``ground_truth/<video>.json`` (original pixel coordinates,
pixel centres at integer coordinates):
  things: the centre of the shape (= its incircle centre, shapes are ellipses),
          its minor semi-axis (= incircle radius), the visible fraction per frame;
  stuff:  the first-frame point of the texture under the region's incircle
          centre, moved with the texture (what a tracker should follow).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core.vipseg import encode_id, write_mask

CATEGORIES = [
    {"id": 1, "name": "sky", "isthing": False},
    {"id": 2, "name": "water", "isthing": False},
    {"id": 3, "name": "grass", "isthing": False},
    {"id": 60, "name": "person", "isthing": True},
    {"id": 61, "name": "cat", "isthing": True},
    {"id": 62, "name": "cup", "isthing": True},
    {"id": 63, "name": "rocket", "isthing": True},
    {"id": 64, "name": "coin", "isthing": True},
]
_THING_SOURCES = {  # category -> (skimage image, crop box y0, y1, x0, x1 as fractions)
    60: ("astronaut", (0.05, 0.45, 0.30, 0.70)),
    61: ("chelsea", (0.10, 0.70, 0.35, 0.75)),
    62: ("coffee", (0.10, 0.75, 0.20, 0.65)),
    63: ("rocket", (0.25, 0.80, 0.35, 0.60)),
    64: ("coins", (0.05, 0.35, 0.05, 0.30)),
}
# Many photos, so a model fitted on the sample data has to copy its first frame rather than recall it.
_BACKGROUNDS = ["coffee", "rocket", "astronaut", "chelsea", "immunohistochemistry", "hubble_deep_field", "retina",
                "brick", "camera", "grass", "gravel", "moon"]
_SIZES = [(240, 320), (256, 256), (216, 384), (240, 320)]  # (H, W): several aspect ratios


def _photo(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def _crop(img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    h, w = img.shape[:2]
    y0, y1, x0, x1 = box
    return img[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)]


@dataclass
class Thing:
    entity_id: int
    category_id: int
    role: str  # mover | occluded | leaver | tiny
    axes: tuple[float, float]  # semi-axes (a >= b), pixels
    angle: float  # radians
    path: np.ndarray  # (T, 2) centre per frame, x/y
    texture: np.ndarray  # square RGB patch covering the shape
    z: int = 0


@dataclass
class Scene:
    video_id: str
    size: tuple[int, int]
    n_frames: int
    background: np.ndarray  # larger than the frame: the camera pans over it
    pan: np.ndarray  # (T, 2) top-left of the camera window, x/y
    horizon: int
    water_rows: tuple[int, int]
    water: np.ndarray  # texture band of the water
    water_shift: np.ndarray  # (T,) horizontal scroll of the water texture, pixels
    things: list[Thing] = field(default_factory=list)


def _smooth_path(rng: np.random.Generator, start: np.ndarray, end: np.ndarray, n: int) -> np.ndarray:
    """Eased straight move plus a gentle sideways wave: smooth, known at every frame."""
    t = np.linspace(0.0, 1.0, n)
    ease = 0.5 - 0.5 * np.cos(np.pi * t)
    base = start[None] + (end - start)[None] * ease[:, None]
    d = end - start
    normal = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9)
    amp = rng.uniform(2.0, 6.0)
    return base + normal[None] * (amp * np.sin(2 * np.pi * t))[:, None]


def _clear_start(rng: np.random.Generator, placed: list[tuple[np.ndarray, float]], a: float, draw) -> np.ndarray:
    """A first-frame centre from ``draw()`` whose ellipse overlaps none placed so far (50 tries)."""
    for _ in range(50):
        start = draw()
        if all(np.linalg.norm(start - c) > a + other + 2 for c, other in placed):
            return start
    return start


@dataclass(frozen=True)
class World:
    """How big things are and how far they go (the defaults are the world the label tests check).

    Sizes and distances are fractions of the frame's short side S.
    """

    mover_size: tuple[float, float] = (0.10, 0.14)  # the mover's incircle radius (minor semi-axis), drawn uniformly
    mover_travel: tuple[float, float] = (0.35, 0.5)  # the mover's straight-line travel over the video
    pan: float = 1.0  # scale of the camera pan (1: up to 44 px; 0: a still camera)
    extras: tuple[tuple[str, ...], ...] = (("occluded", "tiny"), ("leaver",), ("occluded", "leaver", "tiny"), ("tiny",))


DEFAULT_WORLD = World()
# Named worlds for the command line (``sample-data --world``) and the tiny base's fit.
WORLDS = {
    "default": DEFAULT_WORLD,
    "large": World(mover_size=(0.13, 0.17)),  # a larger mover: more latent pixels to follow
}


def make_scene(index: int, n_frames: int, seed: int, roles: list[str] | None = None, size: tuple[int, int] | None = None,
               variants: int = 1, world: World = DEFAULT_WORLD) -> Scene:
    """Video ``index``: scene ``index // variants``, motion ``index % variants``.

    What the first frame shows (photos, sizes, entities and where they start) comes from
    the scene; where things go from there (paths, camera pan, water) from the video. So
    the ``variants`` videos of a scene share their first frame and differ only in motion:
    the first frame alone does not say where things go; only the control does.
    """
    scene_no = index // variants
    look = np.random.default_rng([seed, scene_no])
    move = np.random.default_rng([seed, scene_no, index % variants, 1])
    H, W = size or _SIZES[scene_no % len(_SIZES)]
    margin = 48
    # Rotated against the val split (every 4th video), so val scenes are new arrangements of
    # photos the training videos also show, and not one photo no training video has.
    photo = _BACKGROUNDS[(scene_no + scene_no // 4) % len(_BACKGROUNDS)]
    bg = cv2.resize(_photo(photo), (W + 2 * margin, H + 2 * margin), interpolation=cv2.INTER_AREA)
    pans = (index % variants + scene_no) % 2 == 0  # half the videos pan (from the same window)
    pan_end = world.pan * move.uniform(-margin + 4, margin - 4, size=2) if pans else np.zeros(2)
    pan = margin + np.linspace(0, 1, n_frames)[:, None] * pan_end[None]
    horizon = int(H * 0.35)
    water_rows = (horizon, int(H * 0.55))
    water = cv2.resize(_photo("coffee" if scene_no % 2 else "chelsea"), (W * 2, water_rows[1] - water_rows[0]), interpolation=cv2.INTER_AREA)
    water_shift = np.linspace(0, move.uniform(6, 14) * move.choice([-1, 1]), n_frames)
    scene = Scene(f"sample_{index:04d}", (H, W), n_frames, bg, pan, horizon, water_rows, water, water_shift)

    if roles is None:
        # Rotated against the val split (every 4th video) so val sees every kind of scene.
        k = scene_no if variants > 1 else index + index // 4
        roles = ["mover", *world.extras[k % len(world.extras)]]
    cats = [60, 61, 62, 63, 64]
    look.shuffle(cats)
    instance = {}
    mover_path = None
    placed: list[tuple[np.ndarray, float]] = []  # (first-frame centre, major semi-axis) of each thing so far
    S = min(H, W)
    for z, role in enumerate(roles):
        cat = cats[z % len(cats)]
        instance[cat] = instance.get(cat, 0) + 1
        if role == "tiny":
            axes = (5.0, 4.0)
        else:
            b = look.uniform(*(world.mover_size if role == "mover" else DEFAULT_WORLD.mover_size)) * S
            axes = (b * look.uniform(1.1, 1.5), b)
        a = axes[0]
        pad = a + 3
        if role == "mover":
            # Any direction, a third of the frame or more: a base model cannot guess it.
            lo, hi = np.array([pad, H * 0.45]), np.array([W - pad, H - pad])
            start = look.uniform([W * 0.3, H * 0.5], [W * 0.7, H - pad])
            angle = move.uniform(0, 2 * np.pi)
            end = np.clip(start + move.uniform(*world.mover_travel) * S * np.array([np.cos(angle), np.sin(angle)]), lo, hi)
            if np.linalg.norm(end - start) < 0.25 * S * world.mover_travel[0] / DEFAULT_WORLD.mover_travel[0]:
                # clipped short against an edge: go the other way
                end = np.clip(2 * start - end, lo, hi)
            z_order = 10  # in front of everything
        elif role == "occluded":
            # Starts clear of the mover on its far side and passes behind it half-way (the eased
            # path is at its midpoint at mid-time).
            assert mover_path is not None, "an occluded entity needs a mover first"
            far_right = mover_path[0, 0] < W / 2
            y = np.clip(mover_path[0, 1] - axes[1] * 0.6, a + 1, H - a - 2)
            start = _clear_start(look, placed, a, lambda: np.array([look.uniform(W / 2, W - a - 2) if far_right else look.uniform(a + 1, W / 2), y]))  # noqa: B023 - called at once, in this iteration
            target = mover_path[n_frames // 2] + np.array([0.0, -axes[1] * 0.6])
            end = np.clip(2 * target - start, pad, [W - pad, H - pad])
            z_order = 5
        elif role == "leaver":
            # Starts clear of the others on the mover's far side and leaves through that edge.
            right = mover_path is None or mover_path[0, 0] < W / 2
            start = _clear_start(look, placed, a, lambda: np.array([look.uniform(0.6 * W, W - a - 2) if right else look.uniform(a + 1, 0.4 * W),  # noqa: B023 - called at once, in this iteration
                                                                      look.uniform(a + 1, H * 0.7)]))  # noqa: B023 - called at once, in this iteration
            end = np.array([W + 3 * a if right else -3 * a, start[1] + move.uniform(-10, 10)])
            z_order = 7
        elif role == "tiny":
            start = _clear_start(look, placed, a, lambda: np.array([look.uniform(20, W - 20), look.uniform(H * 0.6, H - 20)]))
            end = np.clip(start + move.uniform(-30, 30, size=2), 20, [W - 20, H - 20])
            z_order = 8
        else:
            raise ValueError(f"unknown role {role}")
        placed.append((start, a))
        path = _smooth_path(move, start, end, n_frames)
        if role == "mover":
            mover_path = path
        src_name, box = _THING_SOURCES[cat]
        side_px = int(math.ceil(2 * a)) + 8
        texture = cv2.resize(_crop(_photo(src_name), box), (side_px, side_px), interpolation=cv2.INTER_AREA)
        eid = encode_id(cat, instance[cat], is_thing=True)
        scene.things.append(Thing(eid, cat, role, axes, float(look.uniform(0, np.pi)), path, texture, z_order))
    scene.things.sort(key=lambda t: t.z)
    return scene


def _ellipse_mask(thing: Thing, t: int, H: int, W: int) -> np.ndarray:
    """Exact rasterisation of the (sub-pixel placed) ellipse at pixel centres."""
    cx, cy = thing.path[t]
    a, b = thing.axes
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    u, v = xs - cx, ys - cy
    c, s = math.cos(thing.angle), math.sin(thing.angle)
    return ((u * c + v * s) / a) ** 2 + ((-u * s + v * c) / b) ** 2 <= 1.0


def render(scene: Scene) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Frames (RGB uint8), panoptic ids (int32) and the truth, per frame."""
    H, W = scene.size
    sky, water_id, grass = (encode_id(c) for c in (1, 2, 3))
    frames, masks = [], []
    visible_px = {t.entity_id: [] for t in scene.things}
    inside_px = {t.entity_id: [] for t in scene.things}
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    for t in range(scene.n_frames):
        px, py = scene.pan[t]
        M = np.float32([[1, 0, px], [0, 1, py]])  # frame pixel -> background pixel
        frame = cv2.warpAffine(scene.background, M, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        ids = np.full((H, W), grass, np.int32)
        ids[: scene.horizon] = sky
        r0, r1 = scene.water_rows
        shift = scene.water_shift[t]
        band = cv2.warpAffine(scene.water, np.float32([[1, 0, -shift], [0, 1, 0]]), (W, r1 - r0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_WRAP)
        frame[r0:r1] = band
        ids[r0:r1] = water_id
        for th in scene.things:
            cx, cy = th.path[t]
            m = _ellipse_mask(th, t, H, W)
            side = th.texture.shape[0]
            mapx = (xs - cx + side / 2 - 0.5).astype(np.float32)
            mapy = (ys - cy + side / 2 - 0.5).astype(np.float32)
            tex = cv2.remap(th.texture, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            frame[m] = tex[m]
            ids[m] = th.entity_id
            inside_px[th.entity_id].append(int(m.sum()))
        for th in scene.things:
            visible_px[th.entity_id].append(int((ids == th.entity_id).sum()))
        frames.append(frame)
        masks.append(ids)

    truth: dict = {"video_id": scene.video_id, "size": [H, W], "n_frames": scene.n_frames, "entities": {}}
    for th in scene.things:
        # The shape is fully visible when no pixel is hidden and it lies inside the frame.
        fully = [
            bool(v == i and _inside(th.path[t], th.axes[0], W, H)) for t, (v, i) in enumerate(zip(visible_px[th.entity_id], inside_px[th.entity_id]))
        ]
        truth["entities"][str(th.entity_id)] = {
            "category_id": th.category_id,
            "is_thing": True,
            "role": th.role,
            "centers": th.path.round(4).tolist(),
            "radius": float(th.axes[1]),
            "visible_px": visible_px[th.entity_id],
            "fully_visible": fully,
        }
    # Stuff: follow the texture point under the first-frame incircle centre.
    from core.geometry import incircle

    for cat, motion in (
        (1, -(scene.pan - scene.pan[0])),
        (3, -(scene.pan - scene.pan[0])),
        (2, np.stack([scene.water_shift - scene.water_shift[0], np.zeros(scene.n_frames)], axis=1)),
    ):
        sid = encode_id(cat)
        mask0 = masks[0] == sid
        if not mask0.any():
            continue
        cx, cy, r = incircle(mask0)
        truth["entities"][str(sid)] = {
            "category_id": cat,
            "is_thing": False,
            "role": "stuff",
            "centers": (np.array([cx, cy])[None] + motion).round(4).tolist(),
            "radius": float(r),
        }
    return frames, masks, truth


def _inside(center: np.ndarray, a: float, W: int, H: int) -> bool:
    x, y = center
    return a + 0.5 <= x <= W - 1.5 - a and a + 0.5 <= y <= H - 1.5 - a


def write_sample_dataset(
    out: Path, n_videos: int = 8, n_frames: int = 16, seed: int = 0, val_every: int = 4, size: tuple[int, int] | None = None,
    variants: int = 1, world: World = DEFAULT_WORLD,
) -> dict:
    """Write the dataset; every ``val_every``-th video goes to val. Returns a summary.

    ``variants`` > 1 makes each run of that many videos one scene in different motions
    (``make_scene``); with ``variants == val_every`` every val video's first frame also
    starts training videos, with other motions: val holds out motions, not images.

    ``size`` (H, W) fixes the frame size (e.g. VIPSeg_720P's 720x1280); by default
    the videos cycle through several small sizes and aspect ratios.
    """
    out = Path(out)
    for sub in ("imgs", "panomasks", "ground_truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / "panoVIPSeg_categories.json").write_text(json.dumps(CATEGORIES, indent=1))
    splits: dict[str, list[str]] = {"train": [], "val": []}
    for i in range(n_videos):
        scene = make_scene(i, n_frames, seed, size=size, variants=variants, world=world)
        frames, masks, truth = render(scene)
        img_dir, mask_dir = out / "imgs" / scene.video_id, out / "panomasks" / scene.video_id
        img_dir.mkdir(exist_ok=True)
        mask_dir.mkdir(exist_ok=True)
        names = [f"{t:08d}" for t in range(n_frames)]
        for name, frame, ids in zip(names, frames, masks):
            cv2.imwrite(str(img_dir / f"{name}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            write_mask(mask_dir / f"{name}.png", ids)
        truth["frames"] = names
        (out / "ground_truth" / f"{scene.video_id}.json").write_text(json.dumps(truth))
        split = "val" if (i % val_every) == val_every - 1 else "train"
        splits[split].append(scene.video_id)
        if split == "val":
            _write_user_study_case(out / "user_study" / scene.video_id, frames[0], masks[0], truth)
    for split, vids in splits.items():
        (out / f"{split}.txt").write_text("".join(f"{v}\n" for v in vids))
    return {"root": str(out), "videos": n_videos, "frames": n_frames, **{k: len(v) for k, v in splits.items()}}


def _write_user_study_case(folder: Path, frame: np.ndarray, ids: np.ndarray, truth: dict) -> None:
    """A still image + JPEG masks + sparse paths, in the official demo format (no video)."""
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "demo.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    meta = {}
    for eid, ent in truth["entities"].items():
        if not ent["is_thing"] or ent["role"] == "tiny":
            continue
        name = f"mask_{eid}.jpg"
        cv2.imwrite(str(folder / name), ((ids == int(eid)) * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        meta[eid] = {"mask_name": name, "trajectory": ent["centers"][::3]}  # sparse, as a user draws it
    (folder / "demo.json").write_text(json.dumps(meta))


def read_truth(root: Path, video_id: str) -> dict:
    return json.loads((Path(root) / "ground_truth" / f"{video_id}.json").read_text())

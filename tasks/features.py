"""FID and FVD of a checkpoint on a suite: features of both sides at one size, intervals, identity.

- Both sides (generated videos and real clips) go through one resize to the suite's
  evaluation size (``eval_size``: its resolution, 256 x 256) before the networks, so a
  64 x 64 tiny controller, SVD's 320 x 576 and the 256 x 256 references are all compared
  with the real clips at the same size (``network_inputs``).
- Features are cached by content: the digest of the frames that reach the network and the
  backbones' names (``features/<backbones>/<digest>.npz``). A regenerated video with the same
  name gets new features; the same real clip is computed once for every checkpoint.
- FID: every frame of every video against every frame of its real clip, ddof 1.
  FVD: one clip per video, the whole clip (both protocols: the suite's 14 frames);
  ``official`` divides covariances by N - 1 (TF-GAN, compute_fvd.py) and may drop the
  items to a multiple of 16 (``evaluate.fvd_drop_to_batch``); ``project`` by N (StyleGAN-V).
- The user-study suite has no real videos: its FID compares, per case, the last
  generated frame (where quality loss shows most) with the case's input image, one image
  per case on each side, so both sets have the same size and pairing; no FVD.
- KID beside FID and KVD beside FVD (same features; ``eval.kernel``): unbiased, with a
  jackknife interval that holds at 12 items, where FID/FVD have none (n < d).
- Intervals: the grouped jackknife (``eval.bootstrap.frechet_interval``), groups by item
  order, so two checkpoints on the same items pair up (``replicates``, ``items_digest``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.config import Config
from core.media import load_cached_clip, read_frames, read_npz, resize_clip, write_npz
from core.rejects import is_infrastructure_error, reason_for
from core.suites import SUITES
from core.tables import Workdir, now_utc
from eval.bootstrap import ItemFeatures, frechet_interval, kid_interval
from eval.catalog import fid_identity, fvd_identity, kid_identity, protocol_of
from eval.features import clip_extractor, frame_extractor
from eval.protocol import drop_to_batch


@dataclass(frozen=True)
class Extractors:
    frames: object
    clips: object

    @property
    def backbones(self) -> tuple[str, str]:
        return self.frames.name, self.clips.name  # type: ignore[attr-defined]


_EXTRACTORS: dict[tuple, Extractors] = {}


def extractors(cfg: Config) -> Extractors:
    """FID/FVD backbones from the configured local files (fallbacks without), built once per process."""
    ev, protocol = cfg.evaluate, protocol_of(cfg)
    official_fid = protocol.fid_backbone == "pytorch-fid"
    fid_path, fid_key = (ev.pytorch_fid_path, "evaluate.pytorch_fid_path") if official_fid else (ev.inception_path, "evaluate.inception_path")
    key = (fid_path, ev.i3d_path, protocol.fid_backbone, protocol.fvd_backbone)
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = Extractors(
            frame_extractor(fid_path, config_key=fid_key, style=protocol.fid_backbone),
            clip_extractor(ev.i3d_path, style=protocol.fvd_backbone),
        )
    return _EXTRACTORS[key]


def eval_size(suite: str) -> tuple[int, int]:
    """The size both sides reach FID's and FVD's networks at."""
    return tuple(SUITES[suite].resolution)  # type: ignore[return-value]


def network_inputs(video: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The one resize every video (generated or real) gets before Inception and I3D."""
    video = np.asarray(video, np.uint8)
    return resize_clip(video, np.zeros(video.shape[:3], np.int32), size)[0]


def load_video(wd: Workdir, ref: str, frames: int) -> np.ndarray:
    """A sample's raw frames (``samples/...npz``) or a real clip from the frames cache, first ``frames``."""
    if ref.startswith("frames/"):
        return load_cached_clip(wd, ref)[0][:frames]
    return read_frames(wd, ref)[:frames]


def feature_path(backbones: tuple[str, str], video: np.ndarray, clip_frames: int | None) -> str:
    h = hashlib.sha1(repr((video.shape, clip_frames)).encode())
    h.update(np.ascontiguousarray(video).tobytes())
    return f"features/{backbones[0]}+{backbones[1]}/{h.hexdigest()[:24]}.npz"


def video_features(wd: Workdir, cfg: Config, video: np.ndarray, clip_frames: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(frame features (T, D1), clip feature (1, D2) of the first ``clip_frames``, or None when shorter), cached."""
    ex = extractors(cfg)
    path = feature_path(ex.backbones, video, clip_frames)
    if wd.exists(path):
        z = read_npz(wd, path)
        return z["frames"], (z["clip"] if z["clip"].size else None)
    ff = ex.frames(video)
    F = clip_frames or len(video)
    cf = ex.clips(video[None, :F]) if len(video) >= F else np.zeros((0, 0))
    write_npz(wd, path, frames=ff.astype(np.float32), clip=cf.astype(np.float32))
    return ff, (cf if cf.size else None)


def _clip_frames(cfg: Config, frames: int) -> int:
    protocol = protocol_of(cfg)
    return protocol.fvd_frames or frames


def feature_jobs(samples: pd.DataFrame, conditions: pd.DataFrame) -> list[tuple[str, int]]:
    """(video reference, frames) of every video the metrics need: the samples and the real clips, once."""
    frames = {r.item_id: int(r.frames) for r in conditions.itertuples()}
    jobs = [(s.video_path.replace(".mp4", ".npz"), frames[s.item_id]) for s in samples.itertuples() if s.item_id in frames]
    jobs += sorted({(r.reference, int(r.frames)) for r in conditions.itertuples() if isinstance(r.reference, str) and r.reference})
    return jobs


def features_of(wd: Workdir, cfg: Config, ref: str, frames: int, suite: str) -> tuple[np.ndarray, np.ndarray | None]:
    """One video's (frame features, clip feature) as the suite's metrics use them (cached)."""
    return video_features(wd, cfg, network_inputs(load_video(wd, ref, frames), eval_size(suite)), _clip_frames(cfg, frames))


def cache_features(workdir_url: str, jobs: list[tuple[str, int]], suite: str, cfg: Config) -> int:
    """Features of these videos (a Ray task's share), so the metrics step only reads them."""
    wd = Workdir(workdir_url)
    done = 0
    for ref, frames in jobs:
        try:
            features_of(wd, cfg, ref, frames, suite)
        except Exception as err:  # noqa: BLE001 - one unreadable video (a path out of the workdir ...) is its item's reject
            if is_infrastructure_error(err):
                raise
            continue  # the metrics step meets the same video, leaves its item out and writes the reject
        done += 1
    return done


def items_digest(item_ids: list[str]) -> str:
    return hashlib.sha1("\n".join(sorted(item_ids)).encode()).hexdigest()[:16]


def frechet_metrics(wd: Workdir, cfg: Config, checkpoint_id: str, suite: str, samples: pd.DataFrame, conditions: pd.DataFrame) -> tuple[list[dict], list[tuple[str, str]]]:
    """FID and FVD rows of one checkpoint on one suite, and (metric, sentence) for what could not be computed."""
    from tasks.conditions import read_inputs

    protocol = protocol_of(cfg)
    ev, ex, size = cfg.evaluate, extractors(cfg), eval_size(suite)
    cond = conditions.drop_duplicates("item_id").set_index("item_id")
    gen_f, real_f, gen_c, real_c, ids, short, why = [], [], [], [], [], [], []
    stills = SUITES[suite].kind == "folder"
    for item_id, group in samples.sort_values(["item_id", "seed"]).groupby("item_id", sort=True):
        if item_id not in cond.index:
            continue
        c = cond.loc[item_id]
        L = int(c["frames"])
        F = _clip_frames(cfg, L)
        try:
            videos = [network_inputs(load_video(wd, v.replace(".mp4", ".npz"), L), size) for v in group["video_path"]]
            feats = [video_features(wd, cfg, v, F) for v in videos]
            if stills:  # the last generated frame vs the case's input image
                image = read_inputs(wd, c["inputs_path"])[0]
                real = ex.frames(network_inputs(image[None], size)), None
            else:
                real = video_features(wd, cfg, network_inputs(load_video(wd, c["reference"], L), size), F)
        except Exception as err:  # noqa: BLE001 - a video of the item cannot be read: it is left out of FID/FVD, with a reject
            if is_infrastructure_error(err):
                raise
            why.append((f"{item_id}/features", f"{reason_for(err, 'generate the item again, or remove its samples row')}; "
                        "it is left out of FID and FVD"))
            continue
        ids.append(item_id)
        if stills:
            gen_f.append(ex.frames(np.stack([v[-1] for v in videos])))
            real_f.append(real[0])
            continue
        rf, rc = real
        gen_f.append(np.concatenate([f for f, _ in feats]))
        real_f.append(rf)
        if rc is None or any(cf is None for _, cf in feats):
            short.append(item_id)
        else:
            gen_c.append(np.concatenate([cf for _, cf in feats]))
            real_c.append(rc)
    rows = []
    digest = items_digest(ids)
    n_fid = len(gen_f)
    frames_label = "last frame vs input image" if stills else "all frames"
    if n_fid >= 2:
        ci = frechet_interval(ItemFeatures(gen_f), ItemFeatures(real_f), groups=ev.jackknife_groups, confidence=ev.confidence, ddof=protocol.fid_ddof)
        rows.append(metric_row(checkpoint_id, suite, "fid", ex.backbones[0], fid_identity(protocol, ex.backbones[0], size, frames_label).stored(), protocol.name, ci, digest))
        kid = kid_interval(gen_f, real_f, confidence=ev.confidence)  # an interval that holds where FID has none
        rows.append(metric_row(checkpoint_id, suite, "kid", ex.backbones[0], kid_identity(protocol, ex.backbones[0], size, frames_label).stored(), protocol.name, kid, digest))
    elif n_fid == 1:
        why.append(("fid", f"one item only ({ids[0]}); a Fréchet distance needs at least 2 items on each side, so FID is not reported"))
    if stills:
        return rows, why
    F = _clip_frames(cfg, int(cond["frames"].max())) if len(cond) else 0
    if short:
        why.append(("fvd",
            f"{len(short)} of {n_fid} videos are shorter than the {F} frames the {protocol.name} protocol's FVD clips need, "
            f"e.g. {short[0]}; generate {F}-frame videos or use another evaluate.protocol"
        ))
    fvd_ids = [i for i in ids if i not in short]
    if protocol.fvd_drop_to_batch:  # compute_fvd.py's rule, without its empty-list quirk (eval.protocol.drop_to_batch)
        kept = len(drop_to_batch(fvd_ids, protocol.fvd_batch))
        if kept < len(fvd_ids):
            why.append(("fvd",
                f"evaluate.fvd_drop_to_batch keeps the first {kept} of {len(fvd_ids)} videos (a multiple of {protocol.fvd_batch}, "
                f"as compute_fvd.py does); set it false to score all of them"
            ))
        fvd_ids, gen_c, real_c = fvd_ids[:kept], gen_c[:kept], real_c[:kept]
    if len(gen_c) >= 2:
        ci = frechet_interval(ItemFeatures(gen_c), ItemFeatures(real_c), groups=ev.jackknife_groups, confidence=ev.confidence, ddof=protocol.fvd_ddof)
        rows.append(metric_row(checkpoint_id, suite, "fvd", ex.backbones[1], fvd_identity(protocol, ex.backbones[1], size, F).stored(), protocol.name, ci, items_digest(fvd_ids)))
        kvd = kid_interval(gen_c, real_c, confidence=ev.confidence)
        kvd_identity = kid_identity(protocol, ex.backbones[1], size, f"{F}-frame clips").stored()
        rows.append(metric_row(checkpoint_id, suite, "kvd", ex.backbones[1], kvd_identity, protocol.name, kvd, items_digest(fvd_ids)))
    elif gen_c:
        why.append(("fvd", "one usable video only; FVD needs at least 2, so it is not reported"))
    return rows, why


def metric_row(cid: str, suite: str, metric: str, backbone: str, identity: str, protocol: str, ci, digest: str) -> dict:
    return dict(
        checkpoint_id=cid,
        suite=suite,
        metric=metric,
        backbone=backbone,
        identity=identity,
        protocol=protocol,
        value=float(ci.value),
        ci_low=float(ci.low),
        ci_high=float(ci.high),
        ci_method=ci.method,
        n=int(ci.n),
        items_digest=digest,
        replicates=[float(r) for r in ci.replicates] or None,
        created_at=now_utc(),
    )

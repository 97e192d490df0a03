"""The labels stage's entity-embedding unit of work: label rows in, ``entity_embeddings`` rows out.

A plain function (no Prefect, no Ray) that the labels flow calls per chunk of videos. The
model is loaded once per call; each video's first frame and panoptic ids come from the
frames cache, and an entity's mask is ``ids[0] == entity_id``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from core.media import load_cached_clip, resize_clip
from core.tables import Workdir


def pending_embeddings(wd: Workdir, dataset: str, split: str, extractor: str) -> list[list[dict]]:
    """Label rows (grouped by video, videos in order) whose entities have no vector from ``extractor`` yet."""
    import pyarrow.compute as pc

    labels = wd.read("labels", columns=["dataset", "split", "video_id", "entity_id", "frames_path"],
                     filter=(pc.field("dataset") == dataset) & (pc.field("split") == split))
    if labels.empty:  # every video of the split was rejected: nothing to embed
        return []
    have = {(d, v, e) for d, v, e, x in wd.keys("entity_embeddings") if x == extractor}
    todo = labels[[(d, v, e) not in have for d, v, e in zip(labels["dataset"], labels["video_id"], labels["entity_id"])]]
    return [g.to_dict("records") for _, g in todo.groupby("video_id", sort=True)]


def embed_videos(workdir_url: str, label_rows: list[dict], model_settings, extractor=None) -> list[dict]:
    """One ``entity_embeddings`` row per label row (entities of the same video share one UNet pass).

    ``extractor`` names backbone, weights fingerprint, timestep, layer, vector size and ensemble,
    so vectors from a different backbone or checkpoint never share a key. ``extractor``: one already
    loaded (the preprocess stage's, on its device); by default one is built from ``model_settings``.
    """
    from model.entity_features import build_extractor

    if not label_rows:
        return []
    wd = Workdir(workdir_url)
    extractor = extractor or build_extractor(model_settings)
    by_video: dict[tuple, list[dict]] = defaultdict(list)
    for row in label_rows:
        by_video[(row["dataset"], row["video_id"], row["frames_path"])].append(row)

    out: list[dict] = []
    for (dataset, video_id, frames_path), rows in by_video.items():
        frames, ids = load_cached_clip(wd, frames_path)
        # At the model's size, as the pipeline computes them for the image it is given: features of
        # the label-resolution frame are another distribution (the UNet sees 16x the latent area).
        frames, ids = resize_clip(frames[:1], ids[:1], (model_settings.height, model_settings.width))
        masks = np.stack([ids[0] == int(r["entity_id"]) for r in rows])
        keep = masks.reshape(len(rows), -1).any(1)
        if not keep.any():
            continue
        vectors = extractor.extract(frames[0], masks[keep]).cpu().numpy().astype(np.float32)
        for row, vec in zip([r for r, k in zip(rows, keep) if k], vectors):
            out.append(
                dict(
                    dataset=dataset,
                    video_id=video_id,
                    entity_id=int(row["entity_id"]),
                    extractor=extractor.extractor_id,
                    vector=vec.tolist(),
                    timestep=extractor.timestep,
                    layer=extractor.layer_name,
                )
            )
    return out

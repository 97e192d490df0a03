"""Shared by the training tests: a workdir with labelled training videos and their entity vectors."""

import pytest

from core.config import load_config
from core.tables import Workdir
from tasks.embeddings import embed_videos
from tasks.labels import VideoRef, label_videos

# Small and quick: no base fit, 4 frames, a checkpoint every 2 steps; the training tests import it. A constant
# rate: the resume tests continue a 2-step run to 4, and a cosine spans the run's current target.
FAST = ["train.fit_base.enabled=false", "train.log_every=1", "train.checkpoint_every=2", "train.batch_size=1", "train.lr=1e-3", "model.num_frames=4",
        "train.cosine=false"]


def overriding(base: list[str], *more: str) -> list[str]:
    """``base`` with the keys of ``more`` replaced (a key may be given once per config load)."""
    keys = {m.split("=", 1)[0] for m in more}
    return [o for o in base if o.split("=", 1)[0] not in keys] + list(more)


@pytest.fixture(scope="session")
def fast_overrides() -> list[str]:
    return list(FAST)


@pytest.fixture(scope="session")
def labelled(sample_root, tmp_path_factory):
    """A workdir with 3 labelled training videos and their entity vectors."""
    root = tmp_path_factory.mktemp("train")
    wd = Workdir(root)
    cfg = load_config("tiny", FAST)
    rows, _ = label_videos(str(sample_root), [VideoRef("sample", "train", v) for v in ("sample_0000", "sample_0001", "sample_0002")], cfg.labels, {}, str(root))
    wd.append("labels", rows)
    wd.append("entity_embeddings", embed_videos(str(root), rows, cfg.model))
    return root



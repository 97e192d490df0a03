"""The bad-input sweep: one video per attack through the real `draganything labels` (Prefect + Ray).

The good videos are labelled, every bad one gets exactly one reject naming its cause,
nothing is read or written outside the data root and the workdir, and a second run
changes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from core.tables import Workdir

pytestmark = pytest.mark.integration

SOURCE = "sample_0000"
LONG = "v" * 216  # a legal folder name; 216 + ".npz" fits in 255 bytes, a 38-byte temp prefix did not


def _copy(root: Path, name: str, frames: int = 8) -> tuple[Path, Path]:
    """Video ``name``: the first ``frames`` frames and masks of the source video."""
    img, msk = root / "imgs" / name, root / "panomasks" / name
    for sub, dst in (("imgs", img), ("panomasks", msk)):
        dst.mkdir(parents=True)
        for p in sorted((root / sub / SOURCE).iterdir())[:frames]:
            shutil.copy(p, dst / p.name)
    return img, msk


def _claim_size(jpeg: Path, height: int, width: int) -> None:
    """Rewrite a JPEG's frame header to claim another size (the bytes stay ~20-30 KB)."""
    data = bytearray(jpeg.read_bytes())
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    jpeg.write_bytes(bytes(data))


def _rename_all(folder: Path, fmt) -> None:
    for k, p in enumerate(sorted(folder.iterdir())):
        p.rename(folder / (fmt(k) + p.suffix))


def _attacks(root: Path) -> dict[str, str]:
    """Build one video per attack; returns video name -> what its reject must say."""
    expect = {}

    img, _ = _copy(root, "opencv-limit")  # 40000x40000 > OpenCV's 2^30 pixel limit: cv2 raised, not a VideoError
    _claim_size(img / "00000000.jpg", 40000, 40000)
    expect["opencv-limit"] = "claims 40000x40000"

    img, _ = _copy(root, "bomb")  # 30000x30000 in ~30 KB: decoding it first took GBs
    _claim_size(img / "00000003.jpg", 30000, 30000)
    expect["bomb"] = "over the 40 MP budget"

    img, _ = _copy(root, "dir-frame")
    (img / "00000004.jpg").unlink()
    (img / "00000004.jpg").mkdir()  # a folder named like a frame
    expect["dir-frame"] = "is a folder or a broken link"

    img, _ = _copy(root, "dangling")
    (img / "00000002.jpg").unlink()
    os.symlink(root / "nowhere.jpg", img / "00000002.jpg")
    expect["dangling"] = "is a folder or a broken link"

    img, msk = _copy(root, "mixed-names")
    for folder, ext in ((img, ".jpg"), (msk, ".png")):
        (folder / f"00000005{ext}").rename(folder / f"frame05{ext}")
    expect["mixed-names"] = "mix naming patterns"

    img, msk = _copy(root, "ambiguous")
    for folder, ext in ((img, ".jpg"), (msk, ".png")):
        shutil.copy(folder / f"00000001{ext}", folder / f"1{ext}")  # 1 and 00000001: the same frame number
    expect["ambiguous"] = "carry the same number"

    _, msk = _copy(root, "wrapped-8bit")
    for p in msk.iterdir():  # the thing ids (category*100 + instance) wrap in an 8-bit PNG
        ids = cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.int64)
        cv2.imwrite(str(p), (ids % 256).astype(np.uint8))
    expect["wrapped-8bit"] = "8-bit PNG"

    img, _ = _copy(root, "truncated")
    (img / "00000006.jpg").write_bytes((img / "00000006.jpg").read_bytes()[:300])
    expect["truncated"] = "cannot be decoded"

    outside = root.parent / "outside"  # a split line that climbs out of the data root to a readable video
    outside.mkdir()
    for sub in ("imgs", "panomasks"):
        for p in sorted((root / sub / SOURCE).iterdir())[:8]:
            shutil.copy(p, outside / p.name)
    expect["../../outside"] = "leaves its folder"
    return expect


def _goods(root: Path) -> list[str]:
    """Videos that must be labelled: unpadded frame numbers (0.jpg ... 7.jpg) and a 216-byte name."""
    img, msk = _copy(root, "unpadded")
    _rename_all(img, str)
    _rename_all(msk, str)
    _copy(root, LONG)
    return ["unpadded", LONG]


def _labels(args: list[str]) -> dict:
    from flows.cli import app

    out = CliRunner().invoke(app, ["labels", *args, "--set", "labels.embeddings=false"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_bad_video_is_one_reject_and_the_good_ones_are_labelled(sample_root, tmp_path, orchestration_ready):
    root = tmp_path / "data" / "sample"
    shutil.copytree(sample_root, root)
    expect = _attacks(root)
    goods = ["sample_0001", "sample_0002", *_goods(root)]
    lines = [goods[0], *expect, goods[0], *goods[1:]]  # sample_0001 is listed twice
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    work = tmp_path / "work"
    args = ["--data-root", str(root), "--split", "train", "--workdir", str(work), "--dataset", "sample"]

    first = _labels(args)
    assert first["videos"] == len(goods) + len(expect) and first["repeated_in_split_file"] == ["sample_0001"]
    wd = Workdir(work)
    labels, rejects = wd.read("labels"), wd.read("rejects")
    assert set(labels["video_id"]) == set(goods)
    by_item = dict(zip(rejects["item"], rejects["reason"]))
    assert sorted(by_item) == sorted(f"sample/train/{v}" for v in expect)
    for video, cause in expect.items():
        assert cause in by_item[f"sample/train/{video}"], (video, by_item[f"sample/train/{video}"])
    assert set(rejects["config_digest"]) == {labels["config_digest"].iloc[0]}
    assert not labels.duplicated(["dataset", "split", "video_id", "entity_id"]).any()
    assert all(wd.exists(p) for p in labels["frames_path"])
    assert not list((tmp_path / "work").parent.glob("*.npz")) and not list(tmp_path.glob("outside*.npz"))

    # Unpadded names are labelled in numeric order: the same trajectories as the zero-padded original.
    ref = _label_source(root)
    mine = labels[labels["video_id"] == "unpadded"].set_index("entity_id")
    for eid, centers in ref.items():
        assert np.allclose(np.array(list(mine.loc[eid, "centers"])), centers)

    second = _labels(args)
    assert second["skipped"] == first["videos"] and second["rows"] == 0 and second["rejects"] == 0
    again = Workdir(work)
    assert again.read("labels").equals(labels)
    assert again.read("rejects").equals(rejects)


def _label_source(root: Path) -> dict[int, np.ndarray]:
    """The source video's first 8 frames labelled directly: entity -> centres."""
    from core.config import load_config
    from core.vipseg import load_categories
    from tasks.labels import VideoRef, label_video

    cfg = load_config("tiny").labels
    rows, _, _ = label_video(root, VideoRef("sample", "train", SOURCE), cfg, load_categories(root))
    return {r["entity_id"]: np.array(r["centers"]) for r in rows}

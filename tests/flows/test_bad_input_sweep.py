"""The bad-input sweep: one video per attack through the real `draganything labels` (Prefect + Ray).

The good videos are labelled, every bad one (a "poison pill") gets exactly one reject naming its
cause, nothing is read or written outside the data root and the workdir, a second run changes
nothing, and the labels are the same as those of a run without the pills. The CLI-level refusals
(config, names, objmc files) are in test_bad_input_sweep_cli.py; generate and evaluate's in
test_bad_input_sweep_stages.py.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pandas.testing as pd_testing
import pytest
from typer.testing import CliRunner

from core.paths import printable
from core.tables import Workdir

pytestmark = pytest.mark.integration

SOURCE = "sample_0000"
LONG = "v" * 216  # a legal folder name; 216 + ".npz" fits in 255 bytes, a 38-byte temp prefix did not
LONGER = "w" * 245  # a legal folder name whose "<name>.npz" (and conditions, train-cache files) does not fit: shortened
NOT_UTF8 = os.fsdecode(b"caf\xe9-latin1")  # a folder name in Latin-1: it made labels exit 1 and lost its chunk


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

    _copy(root, NOT_UTF8)
    expect[NOT_UTF8] = "is not valid UTF-8"

    img, _ = _copy(root, "linked-out")  # a frame that is a symlink to a file outside the data root: was followed
    stray = root.parent / "stray.jpg"
    (img / "00000002.jpg").rename(stray)
    os.symlink(stray, img / "00000002.jpg")
    expect["linked-out"] = "resolves outside"

    outside = root.parent / "outside"  # a split line that climbs out of the data root to a readable video
    outside.mkdir()
    for sub in ("imgs", "panomasks"):
        for p in sorted((root / sub / SOURCE).iterdir())[:8]:
            shutil.copy(p, outside / p.name)
    expect["../../outside"] = "leaves its folder"
    return expect


def _goods(root: Path) -> list[str]:
    """Videos that must be labelled: unpadded frame numbers (0.jpg ... 7.jpg), a 216-byte and a 245-byte name."""
    img, msk = _copy(root, "unpadded")
    _rename_all(img, str)
    _rename_all(msk, str)
    _copy(root, LONG)
    _copy(root, LONGER)
    return ["unpadded", LONG, LONGER]


def _labels(args: list[str]) -> tuple[dict, str]:
    from flows.cli import app

    out = CliRunner().invoke(app, ["labels", *args, "--set", "labels.embeddings=false"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def _write_split(root: Path, lines: list[str]) -> None:
    text = "\ufeff" + "\n".join(lines) + "\n"  # a byte-order mark (Windows editors): the first name was an invisible-character reject
    (root / "train.txt").write_bytes(text.encode("utf-8", "surrogateescape"))


@pytest.fixture(scope="module")
def sweep(sample_root, tmp_path_factory, orchestration_ready):
    """Labels twice on a split of pills and good videos, and once on the good videos alone."""
    tmp = tmp_path_factory.mktemp("sweep")
    root = tmp / "data" / "sample"
    shutil.copytree(sample_root, root)
    expect = _attacks(root)
    goods = ["sample_0001", "sample_0002", *_goods(root)]
    _write_split(root, [goods[0], *expect, goods[0], *goods[1:]])  # sample_0001 is listed twice
    work, clean = tmp / "work", tmp / "clean"
    args = ["--data-root", str(root), "--split", "train", "--dataset", "sample"]
    first, said = _labels([*args, "--workdir", str(work)])
    tables = {t: Workdir(work).read(t) for t in ("labels", "rejects")}
    second, _ = _labels([*args, "--workdir", str(work)])
    again = {t: Workdir(work).read(t) for t in ("labels", "rejects")}
    _write_split(root, goods)
    _labels([*args, "--workdir", str(clean)])
    _write_split(root, [goods[0], *expect, goods[0], *goods[1:]])
    return dict(root=root, tmp=tmp, expect=expect, goods=goods, first=first, said=said, second=second, tables=tables, again=again,
                clean=Workdir(clean).read("labels"))


def _reasons(sweep) -> dict[str, str]:
    rejects = sweep["tables"]["rejects"]
    return dict(zip(rejects["item"], rejects["reason"]))


ATTACKS = ["opencv-limit", "bomb", "dir-frame", "dangling", "mixed-names", "ambiguous", "wrapped-8bit", "truncated", NOT_UTF8,
           "linked-out", "../../outside"]


@pytest.mark.parametrize("video", ATTACKS, ids=[printable(a) for a in ATTACKS])
def test_each_poison_pill_is_one_reject_naming_its_cause(sweep, video):
    by_item = _reasons(sweep)
    item = printable(f"sample/train/{video}")
    assert item in by_item, sorted(by_item)
    assert sweep["expect"][video] in by_item[item], by_item[item]


def test_the_good_videos_of_the_chunks_are_labelled_and_only_the_pills_rejected(sweep):
    first, labels, rejects = sweep["first"], sweep["tables"]["labels"], sweep["tables"]["rejects"]
    expect, goods = sweep["expect"], sweep["goods"]
    assert sorted(ATTACKS) == sorted(expect)
    assert first["videos"] == len(goods) + len(expect) and first["repeated_in_split_file"] == ["sample_0001"]
    assert f"{len(goods)} videos labelled, {len(expect)} rejects" in sweep["said"]
    assert set(labels["video_id"]) == set(goods)  # the BOM-prefixed first line too
    assert sorted(rejects["item"]) == sorted(printable(f"sample/train/{v}") for v in expect)
    assert set(rejects["config_digest"]) == {labels["config_digest"].iloc[0]}
    assert not labels.duplicated(["dataset", "split", "video_id", "entity_id"]).any()
    wd = Workdir(sweep["tmp"] / "work")
    assert all(wd.exists(p) for p in labels["frames_path"])
    assert all(len(Path(p).name.encode()) <= 255 for p in labels["frames_path"])
    assert not list(sweep["tmp"].glob("*.npz")) and not list(sweep["tmp"].glob("outside*.npz"))


def test_unpadded_frame_names_are_labelled_in_numeric_order(sweep):
    ref = _label_source(sweep["root"])
    labels = sweep["tables"]["labels"]
    mine = labels[labels["video_id"] == "unpadded"].set_index("entity_id")
    for eid, centers in ref.items():
        assert np.allclose(np.array(list(mine.loc[eid, "centers"])), centers)


def test_a_rerun_after_the_pills_is_rc0_and_changes_nothing(sweep):
    second = sweep["second"]
    assert second["skipped"] == sweep["first"]["videos"] and second["rows"] == 0 and second["rejects"] == 0
    assert sweep["again"]["labels"].equals(sweep["tables"]["labels"])
    assert sweep["again"]["rejects"].equals(sweep["tables"]["rejects"])


def test_the_labels_are_the_same_as_without_the_pills(sweep):
    drop = ["labelled_at", "created_at"]
    key = ["dataset", "split", "video_id", "entity_id"]

    def norm(df):
        return df.drop(columns=[c for c in drop if c in df]).sort_values(key).reset_index(drop=True)

    pd_testing.assert_frame_equal(norm(sweep["tables"]["labels"]), norm(sweep["clean"]))
    assert len(sweep["tables"]["rejects"]) == len(sweep["expect"])  # plus exactly one reject row per pill


def _label_source(root: Path) -> dict[int, np.ndarray]:
    """The source video's first 8 frames labelled directly: entity -> centres."""
    from core.config import load_config
    from core.vipseg import load_categories
    from tasks.labels import VideoRef, label_video

    cfg = load_config("tiny").labels
    rows, _, _ = label_video(root, VideoRef("sample", "train", SOURCE), cfg, load_categories(root))
    return {r["entity_id"]: np.array(r["centers"]) for r in rows}

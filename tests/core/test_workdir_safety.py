"""Workdir safety: paths confined to the workdir, damaged parts skipped, killed writers' leftovers swept."""

from __future__ import annotations

import os
import time

import pytest

from core.tables import PathError, Workdir, now_utc


def _reject(i: int) -> dict:
    return dict(stage="labels", item=f"ds/train/v{i}", reason="bad frame", at=now_utc())


@pytest.mark.parametrize("bad", ["../outside.npz", "frames/../../outside.npz", "/etc/passwd", "C:/x", "s3://b/k", "a\x00b", "..\\x"])
def test_workdir_refuses_paths_that_leave_it(tmp_path, bad):
    wd = Workdir(tmp_path / "w")
    with pytest.raises(PathError, match="refusing"):
        wd.path(bad)
    with pytest.raises(PathError):
        wd.write_dir_atomic(bad, lambda folder: None)


def test_workdir_refuses_a_symlink_that_points_out(tmp_path):
    wd = Workdir(tmp_path / "w")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("x")
    os.symlink(tmp_path / "secret", tmp_path / "w" / "frames")
    with pytest.raises(PathError, match="outside"):
        wd.path("frames", "key")
    assert wd.path("frames/../tables") == f"{wd.root}/tables"  # a `..` that stays inside is fine


def test_a_table_value_pointing_out_is_not_opened(tmp_path):
    from core.media import load_cached_clip

    wd = Workdir(tmp_path / "w")
    (tmp_path / "outside.npz").write_bytes(b"PK")
    with pytest.raises(PathError):
        load_cached_clip(wd, "../outside.npz")


def test_a_zero_byte_part_is_skipped_and_reported_and_the_table_stays_writable(tmp_path, caplog):
    wd = Workdir(tmp_path)
    wd.append("rejects", [_reject(0)])
    empty = os.path.join(wd.table_dir("rejects"), "part-zero.parquet")
    open(empty, "wb").close()
    junk = os.path.join(wd.table_dir("rejects"), "part-junk.parquet")
    with open(junk, "wb") as f:
        f.write(b"not parquet at all")
    with caplog.at_level("WARNING"):
        assert list(wd.read("rejects")["item"]) == ["ds/train/v0"]
    assert "zero bytes" in caplog.text and "_quarantine" in caplog.text
    from tasks.status import format_status, workdir_status

    assert wd.damaged_parts("rejects") == sorted([junk, empty])
    assert "damaged parts of table rejects" in format_status(workdir_status(wd))
    assert wd.append("rejects", [_reject(1)]) == 1  # the writer moves both out of the table first
    assert sorted(wd.read("rejects")["item"]) == ["ds/train/v0", "ds/train/v1"]
    assert wd.delete("rejects", [("labels", "ds/train/v1")]) == 1
    assert wd.damaged_parts("rejects") == []
    quarantined = wd.quarantined_parts("rejects")
    assert sorted(os.path.basename(p) for p in quarantined) == ["part-junk.parquet", "part-zero.parquet"]
    assert "not readable as Parquet (Parquet magic bytes not found" in " ".join(quarantined.values())
    text = format_status(workdir_status(wd))
    assert "quarantined parts of table rejects" in text and "it has zero bytes" in text


def test_stale_tmp_files_of_killed_writers_are_swept(tmp_path):
    wd = Workdir(tmp_path)
    d = wd.table_dir("rejects")
    os.makedirs(d)
    old, fresh = os.path.join(d, ".tmp-dead-part-a.parquet"), os.path.join(d, ".tmp-live-part-b.parquet")
    for p in (old, fresh):
        open(p, "wb").close()
    past = time.time() - 2 * 3600
    os.utime(old, (past, past))
    wd.append("rejects", [_reject(0)])
    assert not os.path.exists(old) and os.path.exists(fresh)  # a writer still running keeps its file


def test_a_long_legal_name_still_writes_atomically(tmp_path):
    wd = Workdir(tmp_path)
    name = "v" * 216 + ".npz"  # legal (<= 255 bytes), but not with a 38-byte temporary prefix
    wd.write_atomic(wd.path("frames", name), lambda f: f.write(b"data"))
    assert (tmp_path / "frames" / name).read_bytes() == b"data"


def test_status_on_a_mistyped_workdir_does_not_create_it(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    missing = tmp_path / "wrokdir"
    out = CliRunner().invoke(app, ["status", "--workdir", str(missing)])
    assert out.exit_code == 2 and "does not exist" in out.output
    assert not missing.exists()
    out = CliRunner().invoke(app, ["report", "--workdir", str(missing)])
    assert out.exit_code == 2 and not missing.exists()


def test_a_245_byte_video_name_becomes_files_that_fit_everywhere(tmp_path):
    """A legal 245-byte folder name crashed generate (conditions) and training (train cache) with ENAMETOOLONG."""
    import numpy as np

    from core.config import load_config
    from core.media import frames_cache_path, write_blob
    from core.paths import NAME_MAX, file_name
    from tasks.conditions import inputs_path
    from tasks.preprocess import ClipSpec, cache_file

    name = "w" * 245
    wd = Workdir(tmp_path / "wd")
    frames = frames_cache_path("sample", "train", name)
    write_blob(wd, frames, b"x")
    spec = ClipSpec(name, frames, 8, np.array([1]), np.zeros((8, 1, 2)), np.ones((8, 1)), np.ones((8, 1), bool), [(0, False)], [0])
    cfg = load_config("tiny")
    paths = [frames, inputs_path("static", "sample", name), cache_file(wd, cfg, "k", spec, False), cache_file(wd, cfg, "k", spec, True)]
    for p in paths:
        assert len(p.rsplit("/", 1)[1].encode()) <= NAME_MAX, p
        write_blob(wd, p, b"ok")  # the file can be made
    assert len(set(paths)) == len(paths)  # shortened names stay distinct (the digest is of the whole name)
    assert file_name("short", ".npz") == "short.npz"

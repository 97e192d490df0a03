"""Tables and folders on an S3 workdir (a real S3 API on loopback): no rename, no lock, still atomic and idempotent."""

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import objectstore
from core.paths import PathError
from core.tables import TABLES, Workdir, now_utc

REPO = Path(__file__).resolve().parents[2]


def _reject(i: int, reason: str = "bad frame") -> dict:
    return dict(stage="labels", item=f"ds/train/v{i:03d}", reason=reason, at=now_utc())


def _parts(wd: Workdir, table: str) -> list[str]:
    d = wd.table_dir(table)
    return [p for p in wd.fs.ls(d, detail=False) if p.endswith(".parquet")] if wd.fs.exists(d) else []


def _append_at(args) -> int:
    url, start_at, items, endpoint = args
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    wd = Workdir(url)
    rows = [_reject(i, reason=f"writer {os.getpid()}") for i in items]
    time.sleep(max(0.0, start_at - time.time()))  # both writers start together
    return wd.append("rejects", rows)


def test_two_processes_writing_the_same_keys_leave_one_copy(s3_url, s3_endpoint):
    Workdir(s3_url)  # the bucket
    start = time.time() + 3.0
    with mp.get_context("spawn").Pool(2) as pool:
        written = pool.map(_append_at, [(s3_url, start, range(50), s3_endpoint)] * 2)
    wd = Workdir(s3_url)
    df = wd.read("rejects")
    assert len(_parts(wd, "rejects")) == 1
    assert len(df) == 50 and not df.duplicated(["stage", "item"]).any()
    assert max(written) == 50
    assert df["reason"].nunique() == 1  # one writer's part, never a mix of two


def test_a_conditional_create_never_replaces_an_object(s3_url):
    wd = Workdir(s3_url)
    path = wd.path("tables", "rejects", "part-x.parquet")
    assert objectstore.create_once(wd.fs, path, b"first")
    assert not objectstore.create_once(wd.fs, path, b"second")
    assert wd.fs.cat_file(path) == b"first"


def test_overlapping_parts_read_each_key_once(s3_url):
    # Two writers that did not see each other's part: keys 0-9 and 5-14 in two parts.
    wd = Workdir(s3_url)
    for name, keys in (("part-a.parquet", range(10)), ("part-b.parquet", range(5, 15))):
        table = pa.Table.from_pylist([_reject(i, reason=name) for i in keys], schema=TABLES["rejects"].schema)
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        assert objectstore.create_once(wd.fs, wd.path("tables", "rejects", name), buf.getvalue().to_pybytes())
    df = wd.read("rejects")
    assert len(df) == 15 and not df.duplicated(["stage", "item"]).any()
    assert set(df.loc[df["item"] == "ds/train/v007", "reason"]) == {"part-a.parquet"}  # the first part in name order
    assert len(wd.read("rejects", columns=["reason"])) == 15
    assert len(wd.keys("rejects")) == 15
    assert wd.append("rejects", [_reject(i) for i in range(20)]) == 5


_BIG_WRITER = """
import base64, os, sys
sys.path.insert(0, {repo!r})
from core.tables import Workdir, now_utc
wd = Workdir({url!r})
wd.upload_chunk_bytes = 5 * 2**20  # S3's smallest part: a multipart upload of several requests
wd.lock_lease_s = 3.0  # the table lock it dies holding runs out soon (the default lease is minutes)
rows = [dict(stage="labels", item=f"v{{i}}", reason=base64.b64encode(os.urandom(2**20)).decode(), at=now_utc()) for i in range(24)]
print("ready", flush=True)
wd.append("rejects", rows)
print("done", flush=True)
"""


def test_writer_killed_mid_upload_leaves_no_visible_part_and_its_lock_runs_out(s3_url, caplog):
    wd = Workdir(s3_url)
    bucket = urlparse(s3_url).netloc
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_BIG_WRITER.format(repo=str(REPO), url=s3_url))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 60
    while not wd.fs.list_multipart_uploads(bucket) and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wd.fs.list_multipart_uploads(bucket), "the writer finished before it could be killed mid-upload"
    assert _parts(wd, "rejects") == []
    assert wd.read("rejects").empty and wd.keys("rejects") == set()
    # The next writer of the same rows waits out the dead writer's lease, then publishes them once.
    assert wd.fs.exists(wd.path("tables", "rejects", "_lock"))
    rows = [dict(stage="labels", item=f"v{i}", reason="again", at=now_utc()) for i in range(24)]
    with caplog.at_level("WARNING"):
        assert wd.append("rejects", rows) == 24
    assert "took over the lock" in caplog.text and not wd.fs.exists(wd.path("tables", "rejects", "_lock"))
    assert len(_parts(wd, "rejects")) == 1 and len(wd.read("rejects")) == 24


def test_a_put_cut_off_mid_body_publishes_nothing(s3_url, s3_endpoint):
    wd = Workdir(s3_url)
    bucket = urlparse(s3_url).netloc
    host, port = urlparse(s3_endpoint).hostname, urlparse(s3_endpoint).port
    with socket.create_connection((host, port)) as s:
        head = f"PUT /{bucket}/work/tables/rejects/part-cut.parquet HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 100000\r\n\r\n"
        s.sendall(head.encode() + b"PAR1" + b"x" * 40000)  # the writer dies here
        time.sleep(0.3)
    time.sleep(0.5)
    assert _parts(wd, "rejects") == [] and wd.read("rejects").empty


def test_a_failed_blob_write_publishes_nothing(s3_url):
    wd = Workdir(s3_url)

    def boom(f):
        f.write(b"half a file")
        raise OSError("the writer failed")

    with pytest.raises(OSError):
        wd.write_atomic(wd.path("samples", "x.mp4"), boom)
    assert not wd.exists("samples", "x.mp4")


def test_folders_are_published_whole_and_fetched_into_a_cache(s3_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DRAGANYTHING_CACHE", str(tmp_path / "cache"))
    wd = Workdir(s3_url)
    # A writer killed after uploading some files: no manifest, so no folder.
    wd.fs.pipe_file(wd.path("checkpoints", "c1", "state.pt"), b"half")
    assert not wd.has_dir("checkpoints/c1")
    with pytest.raises(FileNotFoundError, match="never written whole"):
        wd.local_dir("checkpoints/c1")

    def write(folder: Path) -> None:
        (folder / "controlnet").mkdir()
        (folder / "controlnet" / "weights.bin").write_bytes(b"w" * 1000)
        (folder / "state.pt").write_bytes(b"s" * 10)

    wd.write_dir_atomic("checkpoints/c1", write)
    assert wd.has_dir("checkpoints/c1")
    wd.write_dir_atomic("checkpoints/c1", lambda folder: (folder / "state.pt").write_bytes(b"other"))  # kept, not replaced
    local = wd.local_dir("checkpoints/c1")
    assert (local / "state.pt").read_bytes() == b"s" * 10 and (local / "controlnet" / "weights.bin").stat().st_size == 1000
    only = wd.local_dir("checkpoints/c1", only="controlnet")
    assert (only / "controlnet" / "weights.bin").is_file() and not (only / "state.pt").exists()
    assert objectstore.local_folder(wd.location("checkpoints/c1")) == str(local)


@pytest.mark.parametrize("name", ["../../PWNED.txt", "ABSOLUTE"])
def test_a_manifest_naming_a_path_outside_the_folder_writes_nothing_outside_the_cache(s3_url, tmp_path, monkeypatch, name):
    cache = tmp_path / "home" / "cache"
    monkeypatch.setenv("DRAGANYTHING_CACHE", str(cache))
    if name == "ABSOLUTE":
        name = str(tmp_path / "abs" / "PWNED.txt")
    wd = Workdir(s3_url)
    root = wd.path("checkpoints", "evil")
    wd.fs.pipe_file(f"{root}/state.pt", b"s" * 10)
    wd.fs.pipe_file(f"{root}/{name.lstrip('/')}", b"pwned")  # the object exists, so a naive fetch would copy it
    manifest = {"files": {"state.pt": 10, name: 5}}
    wd.fs.pipe_file(f"{root}/{objectstore.MANIFEST}", json.dumps(manifest).encode())
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(PathError, match="nothing of that folder was fetched"):
        wd.local_dir("checkpoints/evil")
    after = {p for p in tmp_path.rglob("*")}
    assert after - before <= {cache, cache / "folders"}, sorted(after - before)
    assert not list(tmp_path.rglob("PWNED.txt"))

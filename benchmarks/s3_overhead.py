"""What an s3:// workdir costs against a local one: the same `draganything pipeline`, wall time.

    .venv/bin/python benchmarks/s3_overhead.py [--repeats 2] [--videos 8] [--stages labels,train,generate,evaluate]

Starts moto's S3 server and one Prefect server on loopback, writes the sample data,
then runs the pipeline (a base fit and a controller of a few steps, the test's small
config) on a fresh local workdir and a fresh bucket, alternating which goes first.
Prints one JSON line per run and the median ratio s3/local, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from core.sample_data import write_sample_dataset

REPO = Path(__file__).resolve().parents[1]
SMALL = ["train.steps=4", "train.checkpoint_every=2", "train.log_every=1", "train.batch_size=1", "train.cpus_per_worker=1",
         "train.fit_base.vae_steps=4", "train.fit_base.unet_steps=4", "model.num_frames=4",
         "evaluate.bootstrap=100", "evaluate.jackknife_groups=4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


def run(workdir: str, data: Path, stages: str, env: dict[str, str], cache: Path) -> float:
    sets = sum((["--set", s] for s in SMALL), [])
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "flows.cli", "pipeline", "-w", workdir, "--data-root", str(data),
                          "--stages", stages, "--select", "all", *sets], cwd=REPO, capture_output=True, text=True,
                         env={**env, "DRAGANYTHING_CACHE": str(cache)})
    if out.returncode != 0:
        raise RuntimeError(f"pipeline on {workdir} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--stages", default="labels,train,generate,evaluate")
    args = ap.parse_args()
    from core.runtime import quiet_defaults

    quiet_defaults()  # before Prefect is imported: no telemetry, 2 minutes for the server to start
    from prefect.server.api.server import SubprocessASGIServer

    tmp = Path(tempfile.mkdtemp(prefix="s3-overhead-"))
    data = tmp / "data"
    write_sample_dataset(data, n_videos=args.videos, n_frames=16, seed=0)
    moto, endpoint = start_moto()
    server = SubprocessASGIServer()
    server.start()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": server.api_url, "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": endpoint}
    env.pop("RAY_ADDRESS", None)
    times: dict[str, list[float]] = {"local": [], "s3": []}
    try:
        for r in range(args.repeats):
            order = ("local", "s3") if r % 2 == 0 else ("s3", "local")
            for kind in order:
                name = uuid.uuid4().hex[:8]
                workdir = str(tmp / f"work-{name}") if kind == "local" else f"s3://bench-{name}/work"
                seconds = run(workdir, data, args.stages, env, tmp / f"cache-{name}")
                times[kind].append(seconds)
                print(json.dumps({"run": r, "workdir": kind, "seconds": round(seconds, 1), "load": [round(x, 1) for x in os.getloadavg()]}),
                      flush=True)
    finally:
        server.stop()
        moto.kill()
    ratios = [s / lo for s, lo in zip(times["s3"], times["local"])]
    print(json.dumps({"stages": args.stages, "videos": args.videos, "local_s": times["local"], "s3_s": times["s3"],
                      "ratio_median": statistics.median(ratios), "ratios": ratios, "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()

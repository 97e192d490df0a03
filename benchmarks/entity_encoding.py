"""Entity encoding: the official dense path vs the per-entity-kernel path (and the lighter strided encoder).

Measures, for each (frames x height x width, entity count):
  * dense:   paint the T x C x H x W entity map (``maps.entity_maps``), run the entity encoder on it;
  * fast:    ``ControlEncoder.forward_entities`` (first convolution from per-entity projected kernels
             over disc masks, frames in chunks of 4), same weights;
  * strided: the lighter encoder (first convolution with stride 2), fast path;
the wall time of map building + encoder (forward, fp32, CPU, no grad), the peak resident memory
above the process's baseline, and the max abs difference of fast vs dense outputs.

Each measurement runs in a fresh process so peak memory is its own. Usage::

    .venv/bin/python benchmarks/entity_encoding.py            # the full table (a few minutes on 2 cores)
    .venv/bin/python benchmarks/entity_encoding.py --quick    # small size only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = [(14, 256, 256), (25, 320, 576)]
COUNTS = [1, 10, 40]
CHANNELS = 160  # the official entity vector size
WIDTHS = (160, 32, 96, 256)  # the full-size entity encoder (first convolution 160 -> 160 at full resolution)


def _scene(t: int, h: int, w: int, n: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    start = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    end = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    alpha = torch.linspace(0, 1, t)[:, None, None]
    centers = (1 - alpha) * start + alpha * end  # (T, N, 2) straight paths
    radii = min(h, w) * (0.03 + 0.17 * torch.rand(n, generator=g))  # 3-20 % of the short side
    vectors = torch.randn(n, CHANNELS, generator=g)
    return vectors, centers, radii


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_case(t: int, h: int, w: int, n: int, path: str, stride: int, out_file: str | None, repeats: int = 2) -> dict:
    """One measurement, in this process: the best of ``repeats`` timings (the machine may be shared)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from model.control_encoder import ControlEncoder
    from model.maps import entity_maps

    torch.manual_seed(0)
    enc = ControlEncoder(in_channels=CHANNELS, block_out_channels=WIDTHS, out_channels=320, first_stride=stride).eval()
    torch.nn.init.normal_(enc.conv_out.weight, std=0.02)  # a trained-looking output, not all zeros
    vectors, centers, radii = _scene(t, h, w, n)
    with torch.no_grad():
        enc(torch.zeros(1, CHANNELS, 64, 64))  # warm-up (oneDNN primitives)
        enc.forward_entities(vectors[:1], centers[:1, :1], radii[:1], 64, 64)
        base = _rss_mb()
        seconds = float("inf")
        for _ in range(repeats):
            out = None
            start = time.perf_counter()
            if path == "dense":
                out = enc(entity_maps(vectors, centers, radii, h, w))
            else:
                out = enc.forward_entities(vectors, centers, radii, h, w, frame_chunk=4)
            seconds = min(seconds, time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    if out_file:
        torch.save(out, out_file)
    return dict(seconds=seconds, peak_mb=max(peak, 0.0))


def _subprocess(t, h, w, n, path, stride, out_file) -> dict:
    cmd = [sys.executable, __file__, "--case", str(t), str(h), str(w), str(n), path, str(stride), out_file or "-"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only 14x256x256")
    ap.add_argument("--case", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        t, h, w, n, path, stride, out = args.case
        r = run_case(int(t), int(h), int(w), int(n), path, int(stride), None if out == "-" else out)
        print(json.dumps(r))
        return

    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for t, h, w in SIZES[:1] if args.quick else SIZES:
            for n in COUNTS:
                fd, ff, sd, sf = (os.path.join(tmp, f"{x}.pt") for x in ("fd", "ff", "sd", "sf"))
                dense = _subprocess(t, h, w, n, "dense", 1, fd)
                fast = _subprocess(t, h, w, n, "fast", 1, ff)
                strided = _subprocess(t, h, w, n, "fast", 2, sf)
                diff = float((torch.load(fd) - torch.load(ff)).abs().max())
                sdiff = None
                if (t, h, w) == SIZES[0]:  # the strided encoder's own dense check, at the small size
                    _subprocess(t, h, w, n, "dense", 2, sd)
                    sdiff = float((torch.load(sd) - torch.load(sf)).abs().max())
                row = dict(
                    size=f"{t}x{h}x{w}",
                    entities=n,
                    dense_s=dense["seconds"],
                    dense_mb=dense["peak_mb"],
                    fast_s=fast["seconds"],
                    fast_mb=fast["peak_mb"],
                    speedup=dense["seconds"] / fast["seconds"],
                    mem_ratio=dense["peak_mb"] / max(fast["peak_mb"], 1.0),
                    max_abs_diff=diff,
                    strided_s=strided["seconds"],
                    strided_mb=strided["peak_mb"],
                    strided_diff=sdiff,
                )
                rows.append(row)
                print(json.dumps(row), flush=True)

    print()
    print("| frames x H x W | entities | dense s | dense peak MB | fast s | fast peak MB | speed-up | memory ratio | max abs diff | strided (fast) s | strided peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['entities']} | {r['dense_s']:.2f} | {r['dense_mb']:.0f} | {r['fast_s']:.2f} | "
            f"{r['fast_mb']:.0f} | {r['speedup']:.1f}x | {r['mem_ratio']:.1f}x | {r['max_abs_diff']:.1e} | "
            f"{r['strided_s']:.2f} | {r['strided_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()

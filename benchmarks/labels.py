"""Labels stage speed against the floor of just decoding the same frames and masks.

    .venv/bin/python benchmarks/labels.py [--videos 48] [--flow]

Runs on one core, in-process (the plain functions the Ray tasks run), for the
sample data (8 videos) and a larger generated set. With --flow it also times the
whole Prefect + Ray flow (2 workers), orchestration start-up included.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from core.config import load_config
from core.sample_data import write_sample_dataset
from core.vipseg import list_video, load_categories, read_frame, read_mask, read_split
from tasks.labels import VideoRef, label_videos

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLIP  # noqa: E402 - after the sys.path line that makes the repository importable


def decode_floor(root: Path, videos: list[str], indices: list[int]) -> float:
    t0 = time.perf_counter()
    for v in videos:
        files = list_video(root, v)
        for i in indices:
            read_frame(files.frames[i])
            read_mask(files.masks[i])
    return time.perf_counter() - t0


def time_labels(root: Path, videos: list[str], source: str, workdir: str) -> float:
    cfg = load_config("tiny", {**CLIP, "labels.trajectory_source": source}).labels
    refs = [VideoRef("bench", "train", v) for v in videos]
    cats = load_categories(root)
    t0 = time.perf_counter()
    rows, rejects = label_videos(str(root), refs, cfg, cats, workdir)
    assert rows and not rejects
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=24, help="size of the larger generated set (720p frames, as VIPSeg_720P)")
    ap.add_argument("--flow", action="store_true", help="also time the Prefect + Ray flow")
    args = ap.parse_args()
    cfg = load_config("tiny", CLIP)
    idx = cfg.labels.frames.indices()
    print("| set | videos | frames | decode floor ms/frame | labels ms/frame | videos/s | ratio to floor |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, n, size in (("sample", 8, None), ("generated 720p", args.videos, (720, 1280))):
            root = Path(tmp) / name.split()[0]
            write_sample_dataset(root, n_videos=n, n_frames=16, seed=1, size=size)
            videos = read_split(root, "train") + read_split(root, "val")
            frames = len(videos) * len(idx)
            decode_floor(root, videos[:2], idx)  # warm the page cache and imports
            floor = min(decode_floor(root, videos, idx) for _ in range(2))
            for source in ("mask-center", "tracker"):
                t = min(time_labels(root, videos, source, f"{root}-w-{source}-{k}") for k in range(2))
                print(
                    f"| {name} ({source}) | {len(videos)} | {frames} | {1000 * floor / frames:.2f} | {1000 * t / frames:.2f} "
                    f"| {len(videos) / t:.1f} | {t / floor:.2f}x |"
                )
            if args.flow:
                from flows.labels import labels_flow
                from flows.runtime import run_flow

                t0 = time.perf_counter()
                run_flow(labels_flow, data_root=str(root), split="train", workdir_url=f"{root}-flow", overrides=[f"{k}={v}" for k, v in CLIP.items()], dataset=name, progress=False)
                print(f"| {name} (flow, Prefect+Ray, train split) | | | | | wall {time.perf_counter() - t0:.1f} s | |")


if __name__ == "__main__":
    main()

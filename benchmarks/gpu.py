"""The GPU check in one call: the ``gpu`` tests, then the full-size controller's training and generation rows.

    python3 benchmarks/gpu.py [--out gpu_results.md] [--skip-tests] [--steps 3]    # or: make test-gpu

Imports only model/, torch, transformers, accelerate, safetensors and diffusers (no pydantic,
Prefect or Ray), so it runs on a bare GPU machine with a carried diffusers wheel
(benchmarks/README.md). Models are SVD img2vid-shaped (diffusers' default
``UNetSpatioTemporalConditionModel()``, SVD's VAE and a ViT-H/14 CLIP image encoder) with
random weights: the rows are about speed and memory, not quality. Training: bf16 autocast,
fp32 controller weights and AdamW, gradient checkpointing, batch 1. Generation: bf16,
25 steps, guidance 1 -> 3 (two UNet and controller passes per step), decode chunk 8.
Everything, the test summary included, goes to one markdown file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = ((14, 256, 256), (25, 320, 576))
FULL = SimpleNamespace(conditioning="entity+gaussian", entity_channels=160, encoder_channels=(16, 32, 96, 256), encoder="fast")
SVD_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
               layers_per_block=2, latent_channels=4, sample_size=768, scaling_factor=0.18215, force_upcast=True)
VIT_H = dict(hidden_size=1280, intermediate_size=5120, projection_dim=1024, num_hidden_layers=32, num_attention_heads=16,
             image_size=224, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-5)


def run_tests() -> str:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(ROOT / "tests" / "gpu")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = (r.stdout + r.stderr).strip().splitlines()
    return f"exit {r.returncode}: " + (lines[-1] if lines else "no output") + ("\n\n```\n" + "\n".join(lines[-40:]) + "\n```" if r.returncode else "")


def _peak_gb(torch) -> float:
    return torch.cuda.max_memory_allocated() / 2**30


def _entities(torch, t, h, w, device, n=5):
    g = torch.Generator().manual_seed(0)
    from model.controlnet import EntityInputs

    centers = (torch.rand(1, n, 2, generator=g) * torch.tensor([w, h])).expand(t, -1, -1).clone()
    centers += torch.linspace(0, 40, t)[:, None, None]
    radii = 8 + torch.rand(n, generator=g) * 40
    return EntityInputs(torch.randn(n, 160, generator=g).to(device), centers.to(device), radii.to(device))


def bench_training(torch, unet, steps: int) -> list[dict]:
    from model.maps import render_conditions
    from model.pipeline import build_controlnet
    from model.unet_control import controlled_prediction

    dev = torch.device("cuda")
    cn = build_controlnet(FULL, unet, 8).to(dev, torch.float32).train().requires_grad_(True)
    cn.enable_gradient_checkpointing()
    unet.enable_gradient_checkpointing()
    opt = torch.optim.AdamW([p for p in cn.parameters() if p.requires_grad], lr=1e-5)
    rows = []
    for t, h, w in SIZES:
        ent = _entities(torch, t, h, w, dev)
        conds = {"gaussian": render_conditions("gaussian", ent.centers, ent.radii, h, w)["gaussian"][None]}
        x = torch.randn(1, t, 4, h // 8, w // 8, device=dev)
        img = torch.randn(1, 4, h // 8, w // 8, device=dev)
        emb = torch.randn(1, 1, 1024, device=dev)
        ids = torch.tensor([[6.0, 127.0, 0.02]], device=dev)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                pred = controlled_prediction(unet, cn, x, img, emb, ids, torch.tensor(0.5, device=dev), conditions=conds, entities=[ent])  # noqa: B023 - step() runs inside this iteration only
            pred.float().square().mean().backward()
            opt.step()

        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / steps
        rows.append(dict(what="train", frames=t, size=f"{h}x{w}", samples_per_s=round(1 / dt, 3), s_per_step=round(dt, 3),
                         peak_gb=round(_peak_gb(torch), 2)))
        print(rows[-1], flush=True)
    sizes = checkpoint_sizes(torch, cn, opt)
    unet.disable_gradient_checkpointing()
    return rows, cn.eval().requires_grad_(False), sizes


def checkpoint_sizes(torch, cn, opt) -> dict:
    """Bytes of the full-size controller's checkpoint parts, as tasks/checkpoint_files.py writes them."""
    with tempfile.TemporaryDirectory() as tmp:
        cn.save_pretrained(Path(tmp) / "controlnet", safe_serialization=True)
        torch.save({"optimizer": opt.state_dict()}, Path(tmp) / "state.pt")
        weights = sum(f.stat().st_size for f in (Path(tmp) / "controlnet").iterdir())
        state = (Path(tmp) / "state.pt").stat().st_size
    gb = 2**30
    per_run = (40 * weights + 2 * (weights + state)) / gb  # 100k steps, a checkpoint every 2500, keep_last 2, EMA on
    return dict(weights_gb=round(weights / gb, 2), raw_gb=round(weights / gb, 2), state_gb=round(state / gb, 2),
                full_checkpoint_gb=round((2 * weights + state) / gb, 2), run_100k_gb=round(per_run, 1))


def bench_generation(torch, unet, cn) -> list[dict]:
    import numpy as np
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from model.entity_features import EntityFeatureExtractor
    from model.pipeline import DragAnythingPipeline
    from model.tiny import svd_scheduler

    dev = torch.device("cuda")
    with dev:
        vae = AutoencoderKLTemporalDecoder(**SVD_VAE)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_H))
    pipe = DragAnythingPipeline(vae, clip, unet, svd_scheduler(), CLIPImageProcessor(), cn).to(dev, torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    pipe.set_entity_extractor(EntityFeatureExtractor(unet, vae, pooled_channels=160))  # built once, as tasks/controller.py does
    rows = []
    for t, h, w in SIZES:
        img = (np.random.RandomState(0).rand(h, w, 3) * 255).astype(np.uint8)
        masks = np.zeros((3, h, w), bool)
        masks[0, h // 4 : h // 2, w // 4 : w // 2] = True
        masks[1, h // 2 :, w // 2 :] = True
        masks[2] = True  # the camera
        paths = [[[w * 0.35, h * 0.35], [w * 0.6, h * 0.4]], [[w * 0.75, h * 0.75], [w * 0.6, h * 0.7]], [[w / 2, h / 2]]]
        kw = dict(height=h, width=w, num_frames=t, num_inference_steps=25, decode_chunk_size=8, seed=0)
        pipe(img, masks, paths, **(kw | {"num_inference_steps": 2}))  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        pipe(img, masks, paths, **kw)
        torch.cuda.synchronize()
        rows.append(dict(what="generate", frames=t, size=f"{h}x{w}", s_per_video=round(time.perf_counter() - t0, 2),
                         peak_gb=round(_peak_gb(torch), 2)))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_results.md")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per size")
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args()
    lines = ["# GPU check", ""]
    out = Path(args.out)

    def flush():
        out.write_text("\n".join(lines) + "\n")

    import torch

    if not torch.cuda.is_available():
        lines.append("No CUDA device: nothing measured.")
        flush()
        sys.exit(1)
    lines.append(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    if not args.skip_tests:
        t0 = time.perf_counter()
        summary = run_tests()
        lines += ["", f"gpu tests ({time.perf_counter() - t0:.0f} s): " + summary]
        flush()
    from diffusers import UNetSpatioTemporalConditionModel

    with torch.device("cuda"):
        unet = UNetSpatioTemporalConditionModel()  # SVD img2vid's shape (diffusers' defaults), random weights
    unet = unet.to(torch.bfloat16).eval().requires_grad_(False)
    rows, cn, sizes = bench_training(torch, unet, args.steps)
    lines += ["", "| what | frames x size | samples/s | s/step | s/video | peak GPU memory (GiB) |", "|---|---|---|---|---|---|"]
    lines += [f"| train (bf16 autocast, grad. checkpointing, batch 1) | {r['frames']}x{r['size']} | {r['samples_per_s']} | {r['s_per_step']} | - | {r['peak_gb']} |" for r in rows]
    flush()
    for r in bench_generation(torch, unet, cn.to(torch.bfloat16)):
        rows.append(r)
        lines.append(f"| generate (bf16, 25 steps, guidance 1->3) | {r['frames']}x{r['size']} | - | - | {r['s_per_video']} | {r['peak_gb']} |")
        flush()
    lines += ["", "Checkpoint of the full-size controller (GiB): " + json.dumps(sizes), "", "```json", json.dumps(rows), "```"]
    flush()
    print(out.read_text())


if __name__ == "__main__":
    main()

"""The GPU check in one call: the ``gpu`` tests, then the configured recipe's training and generation rows.

    python3 benchmarks/gpu.py [--out gpu_results.md] [--skip-tests] [--steps 3]    # or: make test-gpu
    python3 benchmarks/gpu.py --rehearse --out /tmp/rehearsal.md                  # the same calls on the CPU, tiny

Imports only model/, tasks/train_data.py and tasks/train_step.py (no pydantic, Prefect or Ray), torch,
transformers, accelerate, safetensors and diffusers, so it runs on a bare GPU machine with a carried
diffusers wheel (benchmarks/README.md). Models are SVD img2vid-shaped (diffusers' default
``UNetSpatioTemporalConditionModel()``, SVD's VAE, a ViT-H/14 CLIP image encoder) and the entity
extractor SD1.5-shaped (ensemble of 8), all with random weights: the rows are about speed and memory,
not quality.

What is measured is the svd-vipseg profile as configured (``svd_vipseg_recipe.json``, which a default
test keeps equal to ``configs/svd-vipseg.yaml``): the frozen UNet in ``model.dtype``, ``train.mixed_precision``
autocast with its GradScaler, ``train.controller_dtype`` with fp32 master weights, the fp32 EMA on the
device, gradient checkpointing, batches from ``batch_for_step`` (maps rendered on the device) and the
training stage's loss and optimizer step (``tasks/train_step.py``); generation in ``generate.dtype``.
Then one row per memory option a user would try: the frozen UNet in bf16, no gradient checkpointing,
8-bit AdamW (when bitsandbytes is installed), and generation under model CPU offload.

Every stage runs in its own try block and writes its row to ``--out`` as soon as it finishes; a stage
that fails writes an error row (its exception in one line) and the next stage runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RECIPE = Path(__file__).with_name("svd_vipseg_recipe.json")
DEVICE_ENV = "DRAGANYTHING_GPU_DEVICE"  # "cpu": the gpu tests run on the CPU (the rehearsal)

SIZES = ((14, 256, 256), (25, 320, 576))
SVD_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
               layers_per_block=2, latent_channels=4, sample_size=768, scaling_factor=0.18215, force_upcast=True)
VIT_H = dict(hidden_size=1280, intermediate_size=5120, projection_dim=1024, num_hidden_layers=32, num_attention_heads=16,
             image_size=224, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-5)
SD15_VAE = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4, sample_size=512)
SD15_UNET = dict(sample_size=64, cross_attention_dim=768)  # diffusers' UNet2DConditionModel defaults are SD1.5's otherwise


def _namespace(d):
    return SimpleNamespace(**{k: _namespace(v) if isinstance(v, dict) else v for k, v in d.items()})


def recipe(rehearse: bool) -> SimpleNamespace:
    """The svd-vipseg profile's model, train and generate sections; rehearsal: the tiny widths."""
    cfg = json.loads(RECIPE.read_text())
    if rehearse:
        cfg["model"] |= dict(entity_channels=16, encoder_channels=[16, 16, 32, 32], num_frames=8, height=64, width=64)
    return _namespace(cfg)


class Report:
    """The markdown file, rewritten whole after every row: a crash later loses nothing written."""

    def __init__(self, path: Path):
        self.path, self.lines, self.rows, self.errors = path, ["# GPU check", ""], [], []

    def add(self, *lines: str) -> None:
        self.lines += lines
        self.flush()

    def row(self, **r) -> None:
        self.rows.append(r)
        print(r, flush=True)
        self.add(f"| {r['what']} | {r.get('frames', '-')}x{r.get('size', '-')} | {r.get('samples_per_s', '-')} | {r.get('s_per_step', '-')} "
                 f"| {r.get('s_per_video', '-')} | {r.get('peak_gb', '-')} | {r.get('note', '')} |")

    def error(self, stage: str, err: BaseException) -> None:
        line = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        self.errors.append(dict(stage=stage, error=line))
        self.add(f"| ERROR {stage} | - | - | - | - | - | {line} |")
        traceback.print_exc()

    def flush(self) -> None:
        body = self.lines + ["", "```json", json.dumps({"rows": self.rows, "errors": self.errors}), "```"]
        self.path.write_text("\n".join(body) + "\n")


def stage(report: Report, name: str):
    """A context that turns any failure of the block into an error row, and frees the device after it."""

    @contextlib.contextmanager
    def block():
        import gc

        import torch

        try:
            yield
        except Exception as err:  # noqa: BLE001 - every failure becomes its row; the next stage runs
            report.error(name, err)
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    return block()


# --- models --------------------------------------------------------------------------------------------


def svd_parts(torch, dev, rehearse: bool, dtype):
    """SVD img2vid-shaped UNet, VAE and CLIP image encoder (random weights); rehearsal: the tiny base."""
    if rehearse:
        from model.tiny import TinySizes, build_tiny_svd

        parts = build_tiny_svd(TinySizes(num_frames=8))
        return {k: (v.to(dev, dtype) if isinstance(v, torch.nn.Module) else v) for k, v in parts.items()}
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from model.tiny import svd_scheduler

    with dev:
        unet = UNetSpatioTemporalConditionModel()
        vae = AutoencoderKLTemporalDecoder(**SVD_VAE)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_H))
    return dict(unet=unet.to(dtype), vae=vae.to(dtype), image_encoder=clip.to(dtype), scheduler=svd_scheduler(),
                feature_extractor=CLIPImageProcessor())


def sd15_extractor(torch, dev, m, rehearse: bool):
    """The SD1.5-shaped entity extractor the profile names (``model.entity_backbone: sd15-unet``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from model.entity_features import EntityFeatureExtractor

    unet_kw = SD15_UNET if not rehearse else dict(sample_size=16, block_out_channels=(32, 32, 32, 32), cross_attention_dim=32,
                                                   layers_per_block=1, attention_head_dim=4)
    vae_kw = SD15_VAE if not rehearse else dict(SD15_VAE, block_out_channels=[32, 32, 32, 32], layers_per_block=1, sample_size=64)
    with dev:
        unet, vae = UNet2DConditionModel(**unet_kw), AutoencoderKL(**vae_kw)
    empty = torch.zeros(1, 77, unet.config.cross_attention_dim, device=dev)
    return EntityFeatureExtractor(unet.eval(), vae.eval(), backbone="sd15-unet", text_embeddings=empty, timestep=m.entity_timestep,
                                  layer=m.entity_layer, pooled_channels=m.entity_channels, ensemble_size=m.entity_ensemble,
                                  size=(m.height, m.width))


# --- training ------------------------------------------------------------------------------------------


def synthetic_clips(torch, m, t: int, h: int, w: int, factor: int, emb_dim: int, n: int = 5):
    """Clips as ``tasks.train_data.load_clips`` returns them (random latents, moving entities)."""
    from tasks.train_data import Clip

    g = torch.Generator().manual_seed(0)
    lh, lw = h // factor, w // factor
    centers = (torch.rand(1, n, 2, generator=g) * torch.tensor([w, h])).expand(t, -1, -1) + torch.linspace(0, 40, t)[:, None, None]
    radii = (8 + torch.rand(n, generator=g) * 40).expand(t, -1).clone()
    import numpy as np

    return [Clip(video_id="bench", latents=torch.randn(t, 4, lh, lw, generator=g),
                 first_frames={0: (torch.randn(2, 4, lh, lw, generator=g), torch.randn(1, emb_dim, generator=g))},
                 entity_ids=np.arange(n), centers=centers.clone(), radii=radii, usable=np.ones((t, n), bool),
                 vectors=torch.randn(n, m.entity_channels, generator=g), mask_counts=torch.randint(0, 4, (t, n, lh, lw), dtype=torch.uint8),
                 cell=factor, views=[(0, False)])]


def train_rows(torch, report, cfg, dev, sizes, steps, rehearse, options: dict, label: str):
    """Training steps of the recipe (``options`` override it, for the memory sweep) at each size."""
    from model import training as T
    from model.pipeline import build_controlnet
    from model.tiny import DTYPES
    from tasks.train_data import batch_for_step
    from tasks.train_step import controller_loss, optimizer_step

    tr = SimpleNamespace(**(vars(cfg.train) | options))
    m = cfg.model
    parts = svd_parts(torch, dev, rehearse, DTYPES[options.get("unet_dtype", m.dtype)])
    unet = parts["unet"].eval().requires_grad_(False)
    factor = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
    del parts
    cn = build_controlnet(m, unet, factor).to(dev, DTYPES[tr.controller_dtype]).train().requires_grad_(True)
    if tr.gradient_checkpointing:
        cn.enable_gradient_checkpointing()
        unet.enable_gradient_checkpointing()
    params = [p for p in cn.parameters() if p.requires_grad]
    masters = T.MasterWeights(params)
    if tr.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        opt = bnb.optim.AdamW8bit(masters.master, lr=tr.lr, weight_decay=tr.weight_decay)
    else:
        opt = torch.optim.AdamW(masters.master, lr=tr.lr, weight_decay=tr.weight_decay)
    ema = [p.detach().float().clone() for p in masters.master] if tr.ema_decay else None
    amp = tr.mixed_precision != "no" and dev.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=DTYPES[tr.mixed_precision])) if amp else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda") if amp and tr.mixed_precision == "fp16" else None
    pipe = SimpleNamespace(unet=unet)
    for t, h, w in sizes:
        run = SimpleNamespace(model=SimpleNamespace(**(vars(m) | dict(num_frames=t, height=h, width=w))), train=tr, generate=cfg.generate)
        clips = synthetic_clips(torch, run.model, t, h, w, factor, unet.config.cross_attention_dim)

        def step(s):
            opt.zero_grad(set_to_none=True)
            for micro in range(tr.grad_accum):
                batch = batch_for_step(clips, s * tr.grad_accum + micro, run, device=dev).to(dev)  # noqa: B023 - runs in this iteration
                loss = controller_loss(pipe, cn, batch, run, torch.Generator().manual_seed(s), autocast) / tr.grad_accum  # noqa: B023 - runs in this iteration
                (scaler.scale(loss) if scaler else loss).backward()
            optimizer_step(opt, masters, scaler, tr.max_grad_norm, ema, tr.ema_decay)

        with stage(report, f"train {label} {t}x{h}x{w}"):
            if not rehearse:  # the warm-up (the rehearsal's one step is warm-up and measurement at once)
                step(0)
            _sync(torch, dev)
            t0 = time.perf_counter()
            for s in range(1, steps + 1):
                step(s)
            _sync(torch, dev)
            dt = (time.perf_counter() - t0) / steps
            report.row(what=f"train: {label}", frames=t, size=f"{h}x{w}", samples_per_s=round(tr.batch_size * tr.grad_accum / dt, 3),
                       s_per_step=round(dt, 3), peak_gb=_peak(torch, dev))
    return cn, opt, ema


# --- generation ----------------------------------------------------------------------------------------


def generation_rows(torch, report, cfg, dev, sizes, rehearse, cn, offload: bool):
    import numpy as np

    from model.pipeline import DragAnythingPipeline, place_pipeline
    from model.tiny import DTYPES

    g, m = cfg.generate, cfg.model
    parts = svd_parts(torch, torch.device("cpu") if offload else dev, rehearse, DTYPES[g.dtype])
    pipe = DragAnythingPipeline(controlnet=cn.eval().requires_grad_(False), **parts)
    pipe.set_progress_bar_config(disable=True)
    pipe.set_entity_extractor(sd15_extractor(torch, torch.device("cpu") if offload else dev, m, rehearse))
    place_pipeline(pipe, SimpleNamespace(device=dev.type, dtype=g.dtype, cpu_offload=offload))
    steps = 2 if rehearse else g.num_inference_steps
    for t, h, w in sizes:
        with stage(report, f"generate{' offload' if offload else ''} {t}x{h}x{w}"):
            img = (np.random.RandomState(0).rand(h, w, 3) * 255).astype(np.uint8)
            masks = np.zeros((3, h, w), bool)
            masks[0, h // 4 : h // 2, w // 4 : w // 2] = True
            masks[1, h // 2 :, w // 2 :] = True
            masks[2] = True  # the camera
            paths = [[[w * 0.35, h * 0.35], [w * 0.6, h * 0.4]], [[w * 0.75, h * 0.75], [w * 0.6, h * 0.7], [w * 0.5, h * 0.6]], [[w / 2, h / 2]]]
            kw = dict(height=h, width=w, num_frames=t, num_inference_steps=steps, decode_chunk_size=g.decode_chunk_size, seed=0,
                      min_guidance_scale=g.min_guidance_scale, max_guidance_scale=g.max_guidance_scale, frame_chunk=m.frame_chunk)
            if not rehearse:
                pipe(img, masks, paths, **(kw | {"num_inference_steps": 1}))  # warm-up
            _sync(torch, dev)
            _reset_peak(torch, dev)
            t0 = time.perf_counter()
            frames = pipe(img, masks, paths, **kw).frames
            _sync(torch, dev)
            assert np.isfinite(frames).all(), "non-finite frames"
            report.row(what=f"generate: {g.dtype}, {steps} steps, guidance {g.min_guidance_scale:g}->{g.max_guidance_scale:g}"
                            + (", model offload" if offload else ""), frames=t, size=f"{h}x{w}",
                       s_per_video=round(time.perf_counter() - t0, 2), peak_gb=_peak(torch, dev))


def checkpoint_row(torch, report, cn, opt) -> None:
    """Bytes of the controller's checkpoint parts, as tasks/checkpoint_files.py writes them."""
    with tempfile.TemporaryDirectory() as tmp:
        cn.save_pretrained(Path(tmp) / "controlnet", safe_serialization=True)
        torch.save({"optimizer": opt.state_dict()}, Path(tmp) / "state.pt")
        weights = sum(f.stat().st_size for f in (Path(tmp) / "controlnet").iterdir())
        state = (Path(tmp) / "state.pt").stat().st_size
        from model.controlnet import DragAnythingControlNetModel

        back = DragAnythingControlNetModel.from_pretrained(Path(tmp) / "controlnet", local_files_only=True)
        assert sum(p.numel() for p in back.parameters()) == sum(p.numel() for p in cn.parameters())
    gb = 2**30
    report.row(what="checkpoint (weights + raw + state, GiB)", note=json.dumps(dict(
        weights_gb=round(weights / gb, 2), state_gb=round(state / gb, 2), full_checkpoint_gb=round((2 * weights + state) / gb, 2),
        run_100k_gb=round((40 * weights + 2 * (weights + state)) / gb, 1))))  # a checkpoint every 2500, keep_last 2, EMA on


# --- the run ---------------------------------------------------------------------------------------------


def _sync(torch, dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(torch, dev):
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(torch, dev):
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else "-"


def run_tests(rehearse: bool) -> str:
    env = os.environ | ({DEVICE_ENV: "cpu"} if rehearse else {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(ROOT / "tests" / "gpu")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    lines = (r.stdout + r.stderr).strip().splitlines()
    if r.returncode:
        raise RuntimeError(f"gpu tests exit {r.returncode}: {lines[-1] if lines else 'no output'}\n" + "\n".join(lines[-40:]))
    return lines[-1] if lines else "no output"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_results.md")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per size")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--rehearse", action="store_true", help="every call on the CPU at tiny sizes (tests/test_bare_gpu_machine.py)")
    args = ap.parse_args(argv)
    report = Report(Path(args.out))
    report.flush()
    import torch

    dev = torch.device("cpu") if args.rehearse else torch.device("cuda")
    sizes = ((8, 64, 64),) if args.rehearse else SIZES
    steps = 1 if args.rehearse else args.steps
    with stage(report, "environment"):
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("no CUDA device: nothing measured (run it on a GPU machine, or --rehearse on a CPU)")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # the recipe's speed: TF32 where it applies
        import diffusers

        name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU (rehearsal)"
        report.add(f"{name}, torch {torch.__version__}, diffusers {diffusers.__version__}, {time.strftime('%Y-%m-%d %H:%M')}; TF32 on")
    cfg = recipe(args.rehearse)
    if not args.skip_tests:
        with stage(report, "tests"):
            t0 = time.perf_counter()
            summary = run_tests(args.rehearse)
            report.add("", f"gpu tests ({time.perf_counter() - t0:.0f} s): {summary}")
    report.add("", "| what | frames x size | samples/s | s/step | s/video | peak GPU memory (GiB) | note |", "|---|---|---|---|---|---|---|")
    tr = cfg.train
    recipe_label = f"{cfg.model.dtype} UNet, {tr.mixed_precision} autocast, {tr.controller_dtype} controller, EMA {tr.ema_decay}"
    cn = opt = None
    with stage(report, "train recipe"):
        cn, opt, _ = train_rows(torch, report, cfg, dev, sizes, steps, args.rehearse, {"optimizer": "adamw"}, recipe_label)
    if cn is not None:
        with stage(report, "checkpoint sizes"):
            checkpoint_row(torch, report, cn, opt)
        for offload in (False, True):
            if offload and dev.type != "cuda":
                report.add("| generate: model offload | - | - | - | - | - | needs a GPU (skipped in the rehearsal) |")
                continue
            with stage(report, f"generate{' offload' if offload else ''}"):
                generation_rows(torch, report, cfg, dev, sizes, args.rehearse, cn, offload)
    del cn, opt
    sweep = [("bf16 frozen UNet", {"unet_dtype": "bf16", "optimizer": "adamw"}),
             ("no gradient checkpointing", {"gradient_checkpointing": False, "optimizer": "adamw"})]
    try:
        import bitsandbytes  # noqa: F401 - only whether it is installed
        sweep.append(("8-bit AdamW", {"optimizer": "adamw8bit"}))
    except ImportError:
        report.add("| train: 8-bit AdamW | - | - | - | - | - | bitsandbytes not installed |")
    for label, options in sweep:
        with stage(report, f"train {label}"):
            train_rows(torch, report, cfg, dev, sizes[-1:], steps, args.rehearse, options, label)
    print(report.path.read_text())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``drag`` and ``strip`` commands of ``draganything`` (registered on :data:`flows.cli.app`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from core.config import load_config
from flows.cli import ConfigOpt, OverrideOpt, _absolute, _check_config, _fail, app


@app.command("drag")
def drag(
    image: Path = typer.Option(..., "--image", help="the first frame: a PNG, JPEG, WebP, BMP or TIFF file"),
    click: list[str] = typer.Option(
        ..., "--click",
        help="one entity to move: X,Y in the image's pixels ('X1,Y1 X2,Y2' = several clicks on it), "
        "or 'all' for the whole image (camera motion); repeat for more entities",
    ),
    path: list[str] = typer.Option(
        ..., "--path", help="where that entity goes: 'X1,Y1 X2,Y2 ...' from where it is grabbed; one --path per --click, in order (one point keeps it still)"
    ),
    negative: list[str] | None = typer.Option(
        None, "--negative", help="a point NOT on the entity: X,Y (for every entity) or K:X,Y (entity K, counted from 1); repeatable"
    ),
    workdir: str = typer.Option(..., "--workdir", "-w", help="the workdir whose checkpoints table holds the controller"),
    out: Path = typer.Option(..., "--out", "-o", help="the video to write (H.264 mp4)"),
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="checkpoint id (default: the newest trained one)"),
    save_case_dir: Path | None = typer.Option(None, "--save-case", help="also save the case here in the user-study folder format"),
    preview: Path | None = typer.Option(None, "--preview", help="also write a PNG of the selections and the paths"),
    seed: int = typer.Option(0, help="sampling seed"),
    steps: int | None = typer.Option(None, min=1, help="denoising steps (default: the config's generate.num_inference_steps)"),
    mask_choice: str = typer.Option("best", "--mask-choice", help="SAM only: best, or 0/1/2 for SAM's small/medium/large mask"),
    as_drawn: bool = typer.Option(False, "--as-drawn", help="use the paths as given instead of starting them at each entity's centre"),
    crop: bool | None = typer.Option(None, "--crop/--no-crop", help="centre-crop to the model's aspect ratio (default: drag.crop_to_model_aspect)"),
    config: str = ConfigOpt,
    overrides: list[str] | None = OverrideOpt,
) -> None:
    """Move entities of an image along paths: click each (SAM or GrabCut gives its mask), give its path, get a video."""
    import re as _re

    _check_config(config, overrides)
    from tasks import drag as dg

    overrides = list(overrides or [])
    if steps is not None:
        overrides.append(f"generate.num_inference_steps={steps}")
    cfg = load_config(config, overrides)
    if len(click) != len(path):
        _fail(f"give one --path per --click, in the same order (got {len(click)} --click and {len(path)} --path)")
    if mask_choice not in ("best", "0", "1", "2"):
        _fail(f"--mask-choice must be best, 0, 1 or 2, got {mask_choice!r}")
    if "://" not in workdir and not Path(workdir).is_dir():
        _fail(f"workdir {workdir} does not exist; train a checkpoint into it first (`draganything train --workdir {workdir}`)")
    if out.suffix.lower() != ".mp4":
        _fail(f"--out {out} must end in .mp4 (the video is H.264 in an MP4 file)")
    if save_case_dir is not None and save_case_dir.exists() and (not save_case_dir.is_dir() or any(save_case_dir.iterdir())):
        _fail(f"--save-case {save_case_dir} already exists and is not empty; choose another folder (nothing was generated)")
    try:
        entities = []
        for k, (c, p) in enumerate(zip(click, path), start=1):
            camera = c.strip().lower() in ("all", "camera", "whole")
            entities.append(dg.EntityInput([] if camera else dg.parse_points(c, f"--click #{k}"), dg.parse_points(p, f"--path #{k}"), camera))
        for text in negative or []:
            m = _re.match(r"^\s*(\d+)\s*:(.*)$", text)
            target = int(m.group(1)) if m else None
            point = dg.parse_point(m.group(2) if m else text, "--negative")
            if target is not None and not 1 <= target <= len(entities):
                _fail(f"--negative {text!r} names entity {target}, but there are {len(entities)} (count from 1)")
            for i, e in enumerate(entities, start=1):
                if target in (None, i) and not e.camera:
                    e.negative.append(point)
        request = dg.DragRequest(image, entities, workdir, out, checkpoint, seed, None if mask_choice == "best" else int(mask_choice),
                                 anchor=not as_drawn, crop=crop, preview=preview, save_case=save_case_dir)
        from tqdm import tqdm

        bars: list = []  # the bar starts with the generation, after the notes

        def report(stage: str, done: int, total: int) -> None:
            if not bars:
                bars.append(tqdm(total=cfg.generate.num_inference_steps, unit="step", desc="denoising", file=sys.stderr))
            bars[0].set_description(stage, refresh=False)
            bars[0].n = done
            bars[0].refresh()

        try:
            summary = dg.drag_files(request, cfg, report, note=lambda text: typer.secho(f"note: {text}", fg=typer.colors.YELLOW, err=True))
        finally:
            for bar in bars:
                bar.close()
    except (dg.DragError, FileNotFoundError) as err:
        _fail(str(err))
    typer.echo(json.dumps(summary))


@app.command("strip")
def strip(
    workdir: str = typer.Option(..., "--workdir", "-w"),
    out: Path = typer.Option(..., "--out", "-o", help="the PNG to write (e.g. docs/control_strip.png)"),
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="a trained checkpoint (default: the newest trained one)"),
    item: list[str] | None = typer.Option(None, "--item", help="suite items to show (repeatable; default: the first 3)"),
    suite: str = typer.Option("sample", "--suite", "-s", help="evaluation suite the videos were generated for"),
    seed: int = typer.Option(0, help="the sampling seed of the videos to show"),
    config: str = ConfigOpt,
    overrides: list[str] | None = OverrideOpt,
) -> None:
    """A PNG per item: first frame with the entities and their paths, then control on and control off frame by frame."""
    _check_config(config, overrides)
    from core.tables import Workdir
    from tasks import drag as dg
    from tasks.generate import load_suite
    from tasks.strip import control_strip, save_png

    cfg = load_config(config, overrides)
    wd = Workdir(_absolute(workdir))
    try:
        ckpt = dg.choose_checkpoint(wd, checkpoint)["checkpoint_id"]
        items = list(item or [])
        if not items:
            items = [i.item_id for i in load_suite(wd, suite, cfg)[0]][:3]
        save_png(out, control_strip(wd, cfg, ckpt, items, suite, seed))
    except (dg.DragError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    typer.echo(json.dumps({"png": str(out), "checkpoint": ckpt, "items": items}))

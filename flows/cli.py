"""The ``draganything`` command: one subcommand per stage of the DAG."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from core.config import ConfigError, load_config
from core.paths import PathError, single_name
from core.runtime import quiet_defaults

quiet_defaults()  # before Prefect is first imported (see core/runtime.py)

app = typer.Typer(add_completion=False, no_args_is_help=True, help="DragAnything training and evaluation pipeline.")

ConfigOpt = typer.Option("tiny", "--config", "-c", help="profile in configs/ (tiny, svd-vipseg) or a YAML path")
OverrideOpt = typer.Option(None, "--set", help="override a config value: key.sub=value (repeatable)")


def _absolute(workdir: str) -> str:
    """Local workdirs as absolute paths: Ray workers need not share this process's directory."""
    return workdir if "://" in workdir else str(Path(workdir).expanduser().resolve())


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


# The evaluation suites were called "benchmarks" until this release: --benchmark/-b (and the
# pipeline's --benchmarks) still work, hidden, for one release, with a warning.
_SUITE_HELP = "evaluation suite: sample (default), vipseg-val or user-study; --benchmark/-b is its deprecated alias, removed in the next release"
SuiteOpt = typer.Option(None, "--suite", "-s", help=_SUITE_HELP)
OldSuiteOpt = typer.Option(None, "--benchmark", "-b", hidden=True)


def _suite(suite: str | None, old: str | None, flag: str = "--benchmark", new_flag: str = "--suite", default: str = "sample") -> str:
    """The suite(s) given, from the new option or its deprecated alias (with a warning)."""
    if old is not None:
        if suite is not None and suite != old:
            _fail(f"{new_flag} {suite!r} and {flag} {old!r} disagree; give {new_flag} only ({flag} is its deprecated alias)")
        typer.secho(f"warning: {flag} is deprecated and will be removed in the next release; use {new_flag}", fg=typer.colors.YELLOW, err=True)
        return old
    return default if suite is None else suite


@app.command("sample-data")
def sample_data(
    out: Path = typer.Option(..., "--out", help="folder to write the dataset to (VIPSeg layout)"),
    videos: int = typer.Option(8, min=1, help="number of videos"),
    frames: int = typer.Option(16, min=2, help="frames per video"),
    seed: int = typer.Option(0, help="random seed (same seed, same bytes)"),
    variants: int = typer.Option(1, min=1, help="videos per scene: same first frame, different motions (val holds out motions)"),
    val_every: int = typer.Option(4, "--val-every", min=2, help="every this-many-th video goes to val (= --variants: one held-out motion per scene)"),
    world: str = typer.Option("default", help="how big the mover is: default (what the label tests check) or large"),
) -> None:
    """Write the embedded sample dataset: real-photo entities on known paths, with ground truth."""
    from core.sample_data import WORLDS, write_sample_dataset

    if world not in WORLDS:
        _fail(f"--world must be one of {', '.join(WORLDS)}, got {world!r}")
    summary = write_sample_dataset(out, n_videos=videos, n_frames=frames, seed=seed, val_every=val_every, variants=variants,
                                   world=WORLDS[world])
    typer.echo(json.dumps(summary))


@app.command("fit-base")
def fit_base(
    out: Path = typer.Option(..., "--out", help="folder to write the tiny base to (an SVD folder in diffusers layout + fit.json)"),
    config: str = ConfigOpt,
    overrides: list[str] | None = OverrideOpt,
    seed: int = typer.Option(0, help="seed of the fit's draws (frames, noise levels, noise)"),
    videos: int = typer.Option(384, min=2, help="sample videos to fit on"),
    variants: int = typer.Option(16, min=1, help="motions per scene in those videos"),
    data_seed: int = typer.Option(1, "--data-seed", help="seed of the sample videos (the demo uses 0: the base never sees its clips)"),
    world: str = typer.Option("large", help="sample-data world of the videos (core.sample_data.WORLDS)"),
) -> None:
    """Fit the embedded tiny VAE and base UNet on rendered sample videos; what the tiny profile ships in model/tiny_base/."""
    _check_config(config, overrides)
    from core.sample_data import WORLDS
    from tasks.fit_base import fit_shipped_base

    if world not in WORLDS:
        _fail(f"--world must be one of {', '.join(WORLDS)}, got {world!r}")
    cfg = load_config(config, overrides)
    if cfg.model.base_model_path:
        _fail("fit-base fits the embedded tiny model; unset model.base_model_path (a real SVD is never refitted)")
    from flows.runtime import use_reserved_cpus
    from flows.train import training_cpus

    use_reserved_cpus(training_cpus(cfg))
    command = " ".join(["draganything fit-base", f"--out {out}", f"--config {config}", *[f"--set {o}" for o in overrides or []],
                        f"--seed {seed}", f"--videos {videos}", f"--variants {variants}", f"--data-seed {data_seed}", f"--world {world}"])
    record = fit_shipped_base(out, cfg, seed=seed, n_videos=videos, variants=variants, data_seed=data_seed, world=world,
                              progress=True, command=command)
    typer.echo(json.dumps(record))


@app.command("labels")
def labels(
    data_root: Path = typer.Option(..., "--data-root", help="VIPSeg-layout root (imgs/, panomasks/, train.txt, val.txt)"),
    split: str = typer.Option("train", help="split file to read: train, val or test"),
    workdir: str = typer.Option(..., "--workdir", "-w", help="workdir (local path or fsspec URL)"),
    config: str = ConfigOpt,
    overrides: list[str] | None = OverrideOpt,
    dataset: str | None = typer.Option(None, help="dataset name in the tables (default: the data root's folder name)"),
    retry_rejects: bool = typer.Option(False, "--retry-rejects", help="try videos rejected before again"),
    relabel: bool = typer.Option(False, "--relabel", help="replace labels made with other labels settings (frames, resolution, trajectory source, ...)"),
) -> None:
    """Entities, incircles and trajectories for every video of a split -> labels table."""
    _check_config(config, overrides, {"--dataset": dataset, "--split": split})  # names that become workdir folders
    if not (data_root / f"{split}.txt").is_file():
        _fail(f"{data_root / f'{split}.txt'} not found: --data-root must be a VIPSeg-layout folder with {split}.txt")
    from flows.labels import labels_flow
    from flows.runtime import run_flow
    from tasks.labels_pending import LabelsChanged

    try:
        summary = run_flow(labels_flow, config, overrides, data_root=str(data_root.resolve()), split=split, workdir_url=_absolute(workdir),
                           dataset=dataset, retry_rejects=retry_rejects, relabel=relabel)
    except LabelsChanged as err:
        _fail(str(err))
    typer.echo(f"{summary['videos'] - summary['skipped'] - summary['rejects']} videos labelled, {summary['rejects']} rejects", err=True)
    typer.echo(json.dumps(summary))


@app.command("train")
def train(
    workdir: str = typer.Option(..., "--workdir", "-w"),
    config: str = ConfigOpt,
    overrides: list[str] | None = OverrideOpt,
    resume: str | None = typer.Option(None, help="checkpoint id to continue from, or 'latest'"),
    steps: int | None = typer.Option(None, min=0, help="optimizer steps to run (default: train.steps)"),
) -> None:
    """Train the controller from the label tables; checkpoints + train_log rows. Re-running continues the run."""
    _check_config(config, overrides)
    from flows.runtime import run_flow
    from flows.train import train_flow
    from tasks.train import CheckpointError

    try:
        summary = run_flow(train_flow, config, overrides, workdir_url=_absolute(workdir), resume=resume, steps=steps)
    except (CheckpointError, ValueError) as err:
        _fail(str(err))
    typer.echo(json.dumps(summary, default=str))


@app.command("generate")
def generate(
    checkpoint: str = typer.Option(..., "--checkpoint", help="checkpoint id from the checkpoints table, or 'static' / 'warp'"),
    suite: str | None = SuiteOpt,
    workdir: str = typer.Option(..., "--workdir", "-w"),
    config: str = ConfigOpt,
    overrides: list[str] | None = OverrideOpt,
    benchmark: str | None = OldSuiteOpt,
) -> None:
    """One checkpoint's videos of an evaluation suite: mp4 (H.264) + raw frames + samples rows."""
    suite = _suite(suite, benchmark)
    _check_config(config, overrides)
    from core.checkpoints import UnknownCheckpoint
    from flows.generate import generate_flow
    from flows.runtime import run_flow

    try:
        summary = run_flow(generate_flow, config, overrides, checkpoint=checkpoint, suite=suite, workdir_url=_absolute(workdir))
    except (UnknownCheckpoint, FileNotFoundError) as err:
        _fail(str(err))
    typer.echo(json.dumps(summary))


evaluate_app = typer.Typer(help="Score a checkpoint's videos of an evaluation suite, or any method's trajectories (objmc).")
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.callback(invoke_without_command=True)
def evaluate(
    ctx: typer.Context,
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="checkpoint id (or 'static' / 'warp')"),
    suite: str | None = SuiteOpt,
    workdir: str | None = typer.Option(None, "--workdir", "-w"),
    config: str = ConfigOpt,
    overrides: list[str] | None = OverrideOpt,
    benchmark: str | None = OldSuiteOpt,
) -> None:
    """ObjMC, FID and FVD with bootstrap intervals -> objmc and metrics tables."""
    if ctx.invoked_subcommand is not None:
        return
    suite = _suite(suite, benchmark)
    if not checkpoint or not workdir:
        _fail("evaluate needs --checkpoint and --workdir (or the subcommand `objmc --gt DIR --pred DIR`)")
    _check_config(config, overrides)
    from core.checkpoints import UnknownCheckpoint
    from flows.evaluate import evaluate_flow
    from flows.runtime import run_flow

    try:
        summary = run_flow(evaluate_flow, config, overrides, checkpoint=checkpoint, suite=suite, workdir_url=_absolute(workdir))
    except (UnknownCheckpoint, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    typer.echo(json.dumps(summary))


@evaluate_app.command("objmc")
def evaluate_objmc(
    gt: Path = typer.Option(..., "--gt", help="folder of ground-truth trajectory JSON files ({entity_id: [[x, y], ...]} per video)"),
    pred: Path = typer.Option(..., "--pred", help="folder of predicted trajectory JSON files, same format"),
    pred_size: str | None = typer.Option(None, "--pred-size", help="HxW the predictions are given at (default: as the evaluation)"),
    gt_size: str | None = typer.Option(None, "--gt-size", help="HxW the ground truth is given at (default: as the evaluation)"),
    eval_size: str | None = typer.Option(None, "--eval-size", help="HxW to measure errors at (official: the original video size)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON (full precision) instead of the report"),
) -> None:
    """ObjMC between two trajectory folders in the official format (any method's outputs): one flat mean over
    every zipped (video, entity, frame), as the official script computes it."""
    from eval.objmc import format_report
    from tasks.evaluate import score_dirs

    for d in (gt, pred):
        if not d.is_dir():
            _fail(f"{d} is not a folder of trajectory JSON files")

    def hw(text: str | None):
        if not text:
            return None
        try:
            h, w = (int(x) for x in text.lower().split("x"))
        except ValueError:
            _fail(f"size '{text}' must look like HEIGHTxWIDTH, e.g. 256x256")
        return (h, w)

    try:
        result = score_dirs(gt, pred, pred_hw=hw(pred_size), gt_hw=hw(gt_size), eval_hw=hw(eval_size))
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    typer.echo(json.dumps(result.summary(), allow_nan=False) if as_json else format_report(result))


@app.command("pipeline")
def pipeline(
    workdir: str = typer.Option(..., "--workdir", "-w"),
    data_root: Path | None = typer.Option(None, "--data-root", help="VIPSeg-layout data for the labels stage"),
    dataset: str = typer.Option("sample", help="dataset name in the tables"),
    config: str = ConfigOpt,
    overrides: list[str] | None = OverrideOpt,
    stages: str = typer.Option("labels,train,generate,evaluate", help="comma-separated stages to run"),
    suites: str | None = typer.Option(
        None, "--suites", help="comma-separated evaluation suites (default: sample); --benchmarks is its deprecated alias, removed in the next release"
    ),
    checkpoint: list[str] | None = typer.Option(None, "--checkpoint", help="evaluate these checkpoints (default: by --select)"),
    select: str = typer.Option("missing", help="missing: checkpoints without metrics; latest: the newest; all"),
    steps: int | None = typer.Option(None, help="training steps (default: the config's)"),
    benchmarks: str | None = typer.Option(None, "--benchmarks", hidden=True),
) -> None:
    """The whole DAG: labels -> train -> generate -> evaluate, skipping what is done."""
    suites = _suite(suites, benchmarks, "--benchmarks", "--suites")
    _check_config(config, overrides)
    if select not in ("missing", "latest", "all"):
        _fail(f"--select must be missing, latest or all, got {select!r}")
    from flows.pipeline import pipeline_flow
    from flows.runtime import run_flow
    from tasks.labels_pending import LabelsChanged

    try:
        report = run_flow(
            pipeline_flow, config, overrides, workdir_url=_absolute(workdir), data_root=str(data_root.resolve()) if data_root else None,
            dataset=dataset, stages=[s.strip() for s in stages.split(",") if s.strip()],
            suites=[b.strip() for b in suites.split(",") if b.strip()], checkpoints=checkpoint or None, select=select,
            train_steps=steps, progress=True,
        )
    except LabelsChanged as err:
        _fail(f"{err} (run `draganything labels --relabel` for that split first)")
    typer.echo(json.dumps(report, default=str))


@app.command("status")
def status(
    workdir: str = typer.Option(..., "--workdir", "-w"),
    as_json: bool = typer.Option(False, "--json"),
    fail_on_regression: bool = typer.Option(
        False, "--fail-on-regression", help="exit 1 when the newest trained checkpoint is significantly worse than the best under any ObjMC identity (paired, per identity)"
    ),
) -> None:
    """What the workdir holds: videos labelled, checkpoints, which have metrics, open rejects."""
    from tasks.status import format_status, workdir_status

    wd = _existing_workdir(workdir)
    st = workdir_status(wd)
    typer.echo(json.dumps(st, default=str, indent=1) if as_json else format_status(st))
    if fail_on_regression:
        from tasks.verdicts import WORSE, describe, newest_verdicts

        suites = sorted(set(wd.read("objmc", columns=["suite"])["suite"]))
        worse = [v for b in suites for v in newest_verdicts(wd, b) if v["verdict"] == WORSE]
        if worse:  # exit 1 (2 is a usage error): a schedule or CI alerts on it
            typer.secho("regression: " + "; ".join(f"on {v['suite']}, {describe(v)}" for v in worse), fg=typer.colors.RED, err=True)
            raise typer.Exit(1)


@app.command("dashboard")
def dashboard(
    workdir: str = typer.Option(..., "--workdir", "-w"),
    port: int = typer.Option(8501, help="port on this machine"),
    address: str | None = typer.Option(
        None, help="address to listen on (default 127.0.0.1: this machine only); another address exposes the dashboard, "
        "so put it behind a TLS reverse proxy (docs/operations.md, Dashboard security)"
    ),
    secrets: Path | None = typer.Option(
        None, "--secrets", help="the secrets file with voter tokens or OIDC settings (default: .streamlit/secrets.toml here or in ~)"
    ),
) -> None:
    """The Streamlit dashboard: leaderboard, compare, training curves, blind pairwise votes."""
    from dashboard import launch

    try:
        launch(workdir, port=port, headless=True, address=address, secrets=str(secrets) if secrets else None)
    except FileNotFoundError as err:
        _fail(str(err))


voters_app = typer.Typer(no_args_is_help=True, help="Voter tokens for the blind pairwise study.")
app.add_typer(voters_app, name="voters")


@voters_app.command("add")
def voters_add(
    secrets: Path = typer.Option(..., "--secrets", help="the secrets file to write (created if missing; keep it out of git)"),
    name: str = typer.Option(..., "--name", help="the voter's name, as votes are stored (letters, digits, '_', '-')"),
) -> None:
    """Give a voter a new random token: the file keeps only its digest; the token is printed once."""
    from dashboard.auth import add_voter

    try:
        token = add_voter(secrets, name)
    except ValueError as err:
        _fail(str(err))
    typer.echo(token)


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


@app.command("report")
def report(workdir: str = typer.Option(..., "--workdir", "-w"), suite: str | None = SuiteOpt, benchmark: str | None = OldSuiteOpt) -> None:
    """Every checkpoint's ObjMC / FID / FVD on an evaluation suite, with 95% bootstrap intervals, as a markdown table."""
    suite = _suite(suite, benchmark)
    from tasks.verdicts import control_effects, describe_control_effect, metrics_table

    wd = _existing_workdir(workdir)
    typer.echo(metrics_table(wd, suite))
    for e in control_effects(wd, suite):
        typer.echo("\n" + describe_control_effect(e))


def _existing_workdir(workdir: str):
    """A workdir that must exist already (commands that only read never create one)."""
    from core.tables import Workdir

    try:
        return Workdir(_absolute(workdir), create=False)
    except FileNotFoundError as err:
        _fail(str(err))


def _check_config(config: str, overrides: list[str] | None, names: dict[str, str | None] | None = None) -> None:
    try:
        load_config(config, overrides)
        for option, value in (names or {}).items():
            value is None or single_name(value, option)  # a single plain folder name, or PathError
    except (ConfigError, PathError) as err:
        _fail(str(err))


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except ConfigError as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()

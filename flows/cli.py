"""The ``draganything`` command: one subcommand per stage of the DAG."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from core.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="DragAnything training and evaluation pipeline.")

ConfigOpt = typer.Option("tiny", "--config", "-c", help="profile in configs/ (tiny, svd-vipseg) or a YAML path")
OverrideOpt = typer.Option(None, "--set", help="override a config value: key.sub=value (repeatable)")


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command("sample-data")
def sample_data(
    out: Path = typer.Option(..., "--out", help="folder to write the dataset to (VIPSeg layout)"),
    videos: int = typer.Option(8, min=1, help="number of videos"),
    frames: int = typer.Option(16, min=2, help="frames per video"),
    seed: int = typer.Option(0, help="random seed (same seed, same bytes)"),
) -> None:
    """Write the embedded sample dataset: real-photo entities on known paths, with ground truth."""
    from core.sample_data import write_sample_dataset

    summary = write_sample_dataset(out, n_videos=videos, n_frames=frames, seed=seed)
    typer.echo(json.dumps(summary))


@app.command("labels")
def labels(
    data_root: Path = typer.Option(..., "--data-root", help="VIPSeg-layout root (imgs/, panomasks/, train.txt, val.txt)"),
    split: str = typer.Option("train", help="split file to read: train, val or test"),
    workdir: str = typer.Option(..., "--workdir", "-w", help="workdir (local path or fsspec URL)"),
    config: str = ConfigOpt,
    overrides: Optional[list[str]] = OverrideOpt,
    dataset: Optional[str] = typer.Option(None, help="dataset name in the tables (default: the data root's folder name)"),
    retry_rejects: bool = typer.Option(False, "--retry-rejects", help="try videos rejected before again"),
) -> None:
    """Entities, incircles and trajectories for every video of a split -> labels table."""
    _check_config(config, overrides)
    if not (data_root / f"{split}.txt").is_file():
        _fail(f"{data_root / f'{split}.txt'} not found: --data-root must be a VIPSeg-layout folder with {split}.txt")
    from flows.labels import run_labels

    summary = run_labels(str(data_root), split, workdir, config=config, overrides=overrides, dataset=dataset, retry_rejects=retry_rejects)
    typer.echo(json.dumps(summary))


@app.command("generate")
def generate(
    checkpoint: str = typer.Option(..., "--checkpoint", help="checkpoint id from the checkpoints table, or 'static' / 'warp'"),
    benchmark: str = typer.Option("sample", "--benchmark", "-b", help="sample, vipseg-val or user-study"),
    workdir: str = typer.Option(..., "--workdir", "-w"),
    config: str = ConfigOpt,
    overrides: Optional[list[str]] = OverrideOpt,
) -> None:
    """Benchmark videos for one checkpoint: mp4 (H.264) + raw frames + samples rows."""
    _check_config(config, overrides)
    from flows.stages import UnknownCheckpoint, run_generate

    try:
        summary = run_generate(checkpoint, benchmark, workdir, config=config, overrides=overrides)
    except (UnknownCheckpoint, FileNotFoundError) as err:
        _fail(str(err))
    typer.echo(json.dumps(summary))


evaluate_app = typer.Typer(help="Score a checkpoint's benchmark videos, or any method's trajectories (objmc).")
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.callback(invoke_without_command=True)
def evaluate(
    ctx: typer.Context,
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="checkpoint id (or 'static' / 'warp')"),
    benchmark: str = typer.Option("sample", "--benchmark", "-b"),
    workdir: Optional[str] = typer.Option(None, "--workdir", "-w"),
    config: str = ConfigOpt,
    overrides: Optional[list[str]] = OverrideOpt,
) -> None:
    """ObjMC, FID and FVD with bootstrap intervals -> objmc and metrics tables."""
    if ctx.invoked_subcommand is not None:
        return
    if not checkpoint or not workdir:
        _fail("evaluate needs --checkpoint and --workdir (or the subcommand `objmc --gt DIR --pred DIR`)")
    _check_config(config, overrides)
    from flows.stages import UnknownCheckpoint, run_evaluate

    try:
        summary = run_evaluate(checkpoint, benchmark, workdir, config=config, overrides=overrides)
    except (UnknownCheckpoint, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    typer.echo(json.dumps(summary))


@evaluate_app.command("objmc")
def evaluate_objmc(
    gt: Path = typer.Option(..., "--gt", help="folder of ground-truth trajectory JSON files ({entity_id: [[x, y], ...]} per video)"),
    pred: Path = typer.Option(..., "--pred", help="folder of predicted trajectory JSON files, same format"),
    pred_size: Optional[str] = typer.Option(None, "--pred-size", help="HxW the predictions are given at (default: as the evaluation)"),
    gt_size: Optional[str] = typer.Option(None, "--gt-size", help="HxW the ground truth is given at (default: as the evaluation)"),
    eval_size: Optional[str] = typer.Option(None, "--eval-size", help="HxW to measure errors at (official: the original video size)"),
) -> None:
    """ObjMC between two trajectory folders in the official format (any method's outputs)."""
    from eval.objmc import format_report, score_dirs

    for d in (gt, pred):
        if not d.is_dir():
            _fail(f"{d} is not a folder of trajectory JSON files")

    def hw(text: Optional[str]):
        if not text:
            return None
        try:
            h, w = (int(x) for x in text.lower().split("x"))
        except ValueError:
            _fail(f"size '{text}' must look like HEIGHTxWIDTH, e.g. 256x256")
        return (h, w)

    try:
        result = score_dirs(gt, pred, pred_hw=hw(pred_size), gt_hw=hw(gt_size), eval_hw=hw(eval_size))
    except FileNotFoundError as err:
        _fail(str(err))
    typer.echo(format_report(result))


@app.command("pipeline")
def pipeline(
    workdir: str = typer.Option(..., "--workdir", "-w"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="VIPSeg-layout data for the labels stage"),
    dataset: str = typer.Option("sample", help="dataset name in the tables"),
    config: str = ConfigOpt,
    overrides: Optional[list[str]] = OverrideOpt,
    stages: str = typer.Option("labels,train,generate,evaluate", help="comma-separated stages to run"),
    benchmarks: str = typer.Option("sample", help="comma-separated benchmarks"),
    checkpoint: Optional[list[str]] = typer.Option(None, "--checkpoint", help="evaluate these checkpoints (default: by --select)"),
    select: str = typer.Option("missing", help="missing: checkpoints without metrics; latest: the newest; all"),
    steps: Optional[int] = typer.Option(None, help="training steps (default: the config's)"),
) -> None:
    """The whole DAG: labels -> train -> generate -> evaluate, skipping what is done."""
    _check_config(config, overrides)
    if select not in ("missing", "latest", "all"):
        _fail(f"--select must be missing, latest or all, got {select!r}")
    from flows.pipeline import run_pipeline

    report = run_pipeline(
        workdir, config=config, overrides=overrides, data_root=str(data_root) if data_root else None, dataset=dataset,
        stages=[s.strip() for s in stages.split(",") if s.strip()], benchmarks=[b.strip() for b in benchmarks.split(",") if b.strip()],
        checkpoints=checkpoint or None, select=select, train_steps=steps, progress=True,
    )
    typer.echo(json.dumps(report, default=str))


@app.command("status")
def status(workdir: str = typer.Option(..., "--workdir", "-w"), as_json: bool = typer.Option(False, "--json")) -> None:
    """What the workdir holds: videos labelled, checkpoints, which have metrics, open rejects."""
    from core.status import format_status, workdir_status
    from core.tables import Workdir

    st = workdir_status(Workdir(workdir))
    typer.echo(json.dumps(st, default=str, indent=1) if as_json else format_status(st))


@app.command("dashboard")
def dashboard(
    workdir: str = typer.Option(..., "--workdir", "-w"),
    port: int = typer.Option(8501, help="port on this machine"),
    address: Optional[str] = typer.Option(None, help="address to serve on (default: Streamlit's)"),
) -> None:
    """The Streamlit dashboard: leaderboard, compare, training curves, blind pairwise votes."""
    from dashboard import launch

    launch(workdir, port=port, headless=True, address=address)


def _check_config(config: str, overrides: Optional[list[str]]) -> None:
    try:
        load_config(config, overrides)
    except ConfigError as err:
        _fail(str(err))


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except ConfigError as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()

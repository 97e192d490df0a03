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
    try:
        load_config(config, overrides)
    except ConfigError as err:
        _fail(str(err))
    if not (data_root / f"{split}.txt").is_file():
        _fail(f"{data_root / f'{split}.txt'} not found: --data-root must be a VIPSeg-layout folder with {split}.txt")
    from flows.labels import run_labels

    summary = run_labels(str(data_root), split, workdir, config=config, overrides=overrides, dataset=dataset, retry_rejects=retry_rejects)
    typer.echo(json.dumps(summary))


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except ConfigError as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()

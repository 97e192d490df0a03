"""``draganything import-official PATH``: registered on ``flows.cli.app``; the work is ``tasks/official_import.py``."""

from __future__ import annotations

import json

import typer

from core.config import load_config
from flows.cli import ConfigOpt, OverrideOpt, _absolute, _check_config, _fail, app


@app.command("import-official")
def import_official(
    path: str = typer.Argument(..., help="the official controller: its diffusers folder (controlnet/) or weights file"),
    workdir: str = typer.Option(..., "--workdir", "-w"),
    config: str = ConfigOpt,
    overrides: list[str] | None = OverrideOpt,
) -> None:
    """Convert the official DragAnything controller into a checkpoint of this workdir (kind 'imported', source recorded)."""
    _check_config(config, overrides)
    from tasks.official_import import import_official as run_import

    try:
        row = run_import(_absolute(workdir), load_config(config, overrides), path)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    typer.echo(json.dumps(row))

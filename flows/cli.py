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
    """The suite(s) given, from the new option or its deprecated alias (with a warning), each one a known suite."""
    from flows.checks import UsageError, check_suites

    if old is not None:
        if suite is not None and suite != old:
            _fail(f"{new_flag} {suite!r} and {flag} {old!r} disagree; give {new_flag} only ({flag} is its deprecated alias)")
        typer.secho(f"warning: {flag} is deprecated and will be removed in the next release; use {new_flag}", fg=typer.colors.YELLOW, err=True)
        suite = old
    value = default if suite is None else suite
    try:
        names = check_suites(value, new_flag)
    except UsageError as err:
        _fail(str(err))
    if new_flag == "--suite" and len(names) != 1:
        _fail(f"--suite takes one suite, got {value!r} (the pipeline's --suites takes several)")
    return value


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
    dataset: str = typer.Option("sample", help="dataset name in the tables: the suite 'sample' reads 'sample', 'vipseg-val' reads 'vipseg'"),
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
    resume: str | None = typer.Option(None, help="checkpoint id to continue from, 'latest', or 'auto' (latest, or from scratch when there is none)"),
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
    as_json: bool = typer.Option(False, "--json", help="print the run's full report as JSON instead of the summary"),
) -> None:
    """The whole DAG: labels -> train -> generate -> evaluate, skipping what is done."""
    from flows.checks import UsageError, check_checkpoints, check_stages, split_list, stage_lines

    suites = _suite(suites, benchmarks, "--benchmarks", "--suites")
    try:  # every value is checked before Prefect, Ray or the workdir exist
        stage_list, suite_list = check_stages(stages), split_list(suites)
        if select not in ("missing", "latest", "all"):
            raise UsageError(f"--select must be missing, latest or all, got {select!r}")
        if checkpoint:
            check_checkpoints(_absolute(workdir), checkpoint, will_train="train" in stage_list)
    except UsageError as err:
        _fail(str(err))
    _check_config(config, overrides)
    if "labels" in stage_list and data_root is None:
        _fail("the labels stage needs --data-root (a VIPSeg-layout folder); leave labels out of --stages to skip it")
    from flows.pipeline import pipeline_flow
    from flows.runtime import StageFailed, run_flow
    from tasks.labels_pending import LabelsChanged

    try:
        report = run_flow(
            pipeline_flow, config, overrides, workdir_url=_absolute(workdir), data_root=str(data_root.resolve()) if data_root else None,
            dataset=dataset, stages=stage_list, suites=suite_list, checkpoints=checkpoint or None, select=select,
            train_steps=steps, progress=True,
        )
    except LabelsChanged as err:
        _fail(f"{err} (run `draganything labels --relabel` for that split first)")
    except StageFailed as err:  # the run's report artifact says the same; nothing was published from the stage
        typer.secho(f"run failed: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(report, default=str) if as_json else "\n".join(["pipeline finished:", *(f"  {x}" for x in stage_lines(report))]))


@app.command("status")
def status(
    workdir: str = typer.Option(..., "--workdir", "-w"),
    as_json: bool = typer.Option(False, "--json"),
    fail_on_regression: bool = typer.Option(
        False, "--fail-on-regression", help="exit 1 when the newest trained checkpoint is significantly worse than the best under any ObjMC identity (paired, per identity)"
    ),
) -> None:
    """What the workdir holds: videos labelled, checkpoints, which have metrics, open rejects."""
    from eval.display import fmt_value
    from tasks.status import format_status, workdir_status

    wd = _existing_workdir(workdir)
    st = workdir_status(wd)
    typer.echo(json.dumps(st, default=str, indent=1) if as_json else format_status(st, fmt_value))
    if fail_on_regression:
        from tasks.verdicts import WORSE, describe, newest_verdicts

        suites = sorted(set(wd.read("objmc", columns=["suite"])["suite"]))
        worse = [v for b in suites for v in newest_verdicts(wd, b) if v["verdict"] == WORSE]
        if worse:  # exit 1 (2 is a usage error): a schedule or CI alerts on it
            typer.secho("regression: " + "; ".join(f"on {v['suite']}, {describe(v)}" for v in worse), fg=typer.colors.RED, err=True)
            typer.echo(REGRESSION_HELP, err=True)
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


@app.command("report")
def report(workdir: str = typer.Option(..., "--workdir", "-w"), suite: str | None = SuiteOpt, benchmark: str | None = OldSuiteOpt) -> None:
    """Every checkpoint's ObjMC / FID / FVD on an evaluation suite, with 95% bootstrap intervals, as a markdown table."""
    suite = _suite(suite, benchmark)
    from eval.report import metrics_table
    from tasks.verdicts import control_effects, describe_control_effect

    wd = _existing_workdir(workdir)
    typer.echo(metrics_table(wd, suite))
    for e in control_effects(wd, suite):
        typer.echo("\n" + describe_control_effect(e))


REGRESSION_HELP = (
    "How to read this: the newest trained checkpoint was compared with the best other trained one on the items both were "
    "scored on; the bracket is a 95% paired bootstrap interval of the ObjMC difference (px; positive = the newer is worse). "
    "It lies wholly above 0, so the drop is not noise. Right after `make demo` this is expected on user-study (the tiny model "
    "gets worse there between steps 500 and 1000); docs/operations.md, 'A nightly schedule'."
)


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


from flows import cli_official  # noqa: E402,F401 - registers `import-official` on app (its own module: this one is full)


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except ConfigError as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        sys.exit(2)


from flows import cli_media  # noqa: E402, F401 - registers `drag` and `strip` on `app` (kept apart: this file's size)

if __name__ == "__main__":  # pragma: no cover
    from flows.cli import main as _main  # the imported module's app, the one cli_media registered on

    _main()

"""`--suite` names the evaluation suite; `--benchmark/-b` still works for one release, with a warning."""

from typer.testing import CliRunner

from core.tables import Workdir, now_utc
from flows.cli import app


def _workdir(tmp_path) -> str:
    wd = Workdir(tmp_path)
    wd.append("metrics", [dict(checkpoint_id=c, suite=s, metric="objmc", backbone="tracker:lk", identity="project | lk", protocol="project", value=v, ci_low=v - 1, ci_high=v + 1,
                               n=3, created_at=now_utc()) for c, s, v in (("warp", "sample", 0.9), ("static", "user-study", 9.7))])
    return str(tmp_path)


def test_report_takes_suite_and_the_deprecated_benchmark_alias(tmp_path):
    w = _workdir(tmp_path)
    runner = CliRunner()
    new = runner.invoke(app, ["report", "-w", w, "-s", "sample"])
    assert new.exit_code == 0 and "| ref: warp |" in new.output and "static" not in new.output and "deprecated" not in new.output
    for flag in ("--benchmark", "-b"):
        old = runner.invoke(app, ["report", "-w", w, flag, "user-study"])
        assert old.exit_code == 0 and "| ref: static |" in old.output and "warp" not in old.output
        assert "deprecated" in old.output and "--suite" in old.output
    both = runner.invoke(app, ["report", "-w", w, "--suite", "sample", "--benchmark", "user-study"])
    assert both.exit_code == 2 and "disagree" in both.output
    default = runner.invoke(app, ["report", "-w", w])
    assert "| ref: warp |" in default.output


def _help(command: str) -> str:
    import re

    return re.sub(r"[\s│]+", " ", CliRunner().invoke(app, [command, "--help"]).output)  # unwrapped, without the box


def test_help_names_suite_and_the_alias():
    out = _help("generate")
    assert "--suite" in out and "--benchmark/-b is its deprecated alias" in out
    pipe = _help("pipeline")
    assert "--suites" in pipe and "--benchmarks is its deprecated alias" in pipe

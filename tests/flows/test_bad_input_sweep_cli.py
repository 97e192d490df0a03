"""The bad-input sweep, the inputs refused before any stage runs: config files and ``--set`` values, names that
would become folders, and the trajectory files of `evaluate objmc`. Each through the real CLI: exit code 2,
one sentence naming the cause, nothing written, and no hang (the config ones run in a subprocess with a timeout).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
TINY = (ROOT / "configs" / "tiny.yaml").read_text()


def _cli(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    """`draganything ARGS` in its own process: a loader that hangs fails the test at ``timeout`` instead of hanging it."""
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def _refused(out, *words: str) -> str:
    text = (out.stderr if hasattr(out, "stderr") and out.stderr else out.output).strip()
    assert out.returncode if hasattr(out, "returncode") else out.exit_code, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text[-3000:]
    for w in words:
        assert w in text, text
    return text


def _labels_args(sample_root: Path, work: Path, *extra: str) -> list[str]:
    """A labels command whose split file does not exist: a check that let the bad input through fails on that, fast."""
    return ["labels", "--data-root", str(sample_root), "--split", "nosuch", "--workdir", str(work), *extra]


def test_a_billion_laughs_config_is_refused_at_once_not_expanded(sample_root, tmp_path):
    laughs = ['lol0: &l0 ["lol"]'] + [f"lol{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 10)}]" for k in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(laughs) + "\n" + TINY)  # 10^9 "lol"s from a few hundred bytes: the CLI hung
    out = _cli(_labels_args(sample_root, tmp_path / "work", "--config", str(bomb)), timeout=60)
    _refused(out, "YAML aliases", "not allowed")
    assert not (tmp_path / "work").exists()


def test_100k_deep_nesting_is_one_sentence(sample_root, tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text(TINY + "\ndeep: " + "[" * 100_000 + "]" * 100_000 + "\n")
    _refused(_cli(_labels_args(sample_root, tmp_path / "work", "--config", str(deep))), "nests deeper than 32 levels")
    from flows.cli import app

    out = CliRunner().invoke(app, _labels_args(sample_root, tmp_path / "work", "--set", "labels.chunk_size=" + "[" * 30_000 + "]" * 30_000))
    assert out.exit_code == 2, out.output
    _refused(out, "nests deeper than 32 levels")


def test_a_5000_digit_integer_is_one_sentence(sample_root, tmp_path):
    out = _cli(_labels_args(sample_root, tmp_path / "work", "--set", "train.steps=" + "9" * 5000))
    _refused(out, "has 5000 digits")


@pytest.mark.parametrize("overrides, words", [
    (["train.steps=5", "train.steps=6"], ["--set train.steps is given twice"]),
    (["train.steps=1000000000"], ["train.steps", "less than or equal to 10000000"]),
    (["train.lr=.nan"], ["train.lr", "finite number"]),
    (["model.height=1000000"], ["model.height", "less than or equal to 8192"]),
])
def test_a_repeated_or_absurd_set_value_is_refused(sample_root, tmp_path, overrides, words):
    from flows.cli import app

    args = _labels_args(sample_root, tmp_path / "work")
    for o in overrides:
        args += ["--set", o]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 2, out.output
    _refused(out, *words)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("option, value", [("--dataset", "../x"), ("--dataset", "/abs"), ("--split", "../nosuch")])
def test_a_dataset_or_split_that_is_not_one_name_is_refused_up_front(sample_root, tmp_path, option, value):
    from flows.cli import app

    out = CliRunner().invoke(app, [*_labels_args(sample_root, tmp_path / "work"), option, value])
    assert out.exit_code == 2, out.output
    _refused(out, option, "is not a single folder name")
    assert not (tmp_path / "work").exists()


def _objmc(tmp_path: Path, gt: str, pred: str, *extra: str):
    from flows.cli import app

    for name, text in (("gt", gt), ("pred", pred)):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "video.json").write_text(text)
    return CliRunner().invoke(app, ["evaluate", "objmc", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), *extra])


def test_objmc_points_that_are_not_x_y_pairs_are_refused_not_reshaped(tmp_path):
    good = json.dumps({"1": [[10, 10], [12, 11]]})
    out = _objmc(tmp_path, good, json.dumps({"1": [[10, 10, 1], [12, 11, 1]]}))  # [x, y, 1] became 3 other points
    assert out.exit_code == 2, out.output
    _refused(out, "entity 1: point 0 is [10, 10, 1]", "[x, y]")


def test_objmc_50k_deep_json_is_one_sentence(tmp_path):
    out = _objmc(tmp_path, json.dumps({"1": [[10, 10]]}), '{"1": ' + "[" * 50_000 + "]" * 50_000 + "}")
    assert out.exit_code == 2, out.output
    _refused(out, "nests too deeply")


def test_objmc_json_output_is_strict_json_without_nan(tmp_path):
    out = _objmc(tmp_path, json.dumps({"1": [None, None]}), json.dumps({"1": [[1, 2], [3, 4]]}), "--json")  # nothing to score
    assert out.exit_code == 0, out.output

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")

    summary = json.loads(out.stdout.strip().splitlines()[-1], parse_constant=no_constants)
    assert summary["objmc"] is None and summary["n_pairs"] == 0

import ast
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from core.config import Config, ConfigError, load_config


def test_profiles_load():
    tiny = load_config("tiny")
    paper = load_config("svd-vipseg")
    assert tiny.profile == "tiny" and paper.labels.frames.count == 25
    assert tiny.digest() != paper.digest()


def test_bad_choice_names_key_and_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config("tiny", ["labels.trajectory_source=optical-flow"])
    msg = str(e.value)
    assert "labels.trajectory_source" in msg and "'mask-center'" in msg and "'tracker'" in msg and "optical-flow" in msg


def test_out_of_range_and_unknown_keys():
    with pytest.raises(ConfigError, match=r"labels\.frames\.count"):
        load_config("tiny", {"labels.frames.count": 1})
    with pytest.raises(ConfigError, match=r"config key 'labels\.colour' is unknown"):
        load_config("tiny", ["labels.colour=red"])


def test_overrides_parse_yaml_values():
    cfg = load_config("tiny", ["labels.resolution=[128, 96]", "labels.include_void=true"])
    assert cfg.labels.resolution == (128, 96) and cfg.labels.include_void is True


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="allowed: .*tiny"):
        load_config("huge")


def test_a_key_given_twice_is_an_error(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("runtime:\n  num_cpus: 2\nruntime:\n  num_cpus: 4\n")
    with pytest.raises(ConfigError, match="'runtime' appears twice"):
        load_config(str(p))


# --- every config key a message or help text names exists ------------------------------------

_ROOT = Path(__file__).resolve().parents[2]
_SECTIONS = "labels|generate|evaluate|eval|runtime|model|drag|train"  # eval: a likely slip for evaluate
_KEY = re.compile(rf"(?<![\w./-])(?:{_SECTIONS})(?:\.[a-z_][a-z0-9_]*)+(?![\w*(/-])")
_FILES = (".py", ".txt", ".json", ".safetensors", ".yaml", ".pt", ".npz", ".toml", ".md")


def named_keys(source: str) -> list[tuple[int, str]]:
    """(line, dotted key) for every config key written in a string constant of ``source``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for m in _KEY.finditer(node.value):
                key = m.group(0).rstrip(".")
                parts = key.split(".")
                if key.endswith(_FILES) or any((_ROOT / "/".join(parts[:i]) ).with_suffix(".py").is_file() for i in range(2, len(parts) + 1)):
                    continue  # a file name (train.txt) or something in one of our modules (model.segmentation, eval.votes.f)
                out.append((node.lineno, key))
    return out


def key_exists(key: str) -> bool:
    node: type[BaseModel] | None = Config
    for part in key.split("."):
        if node is None or part not in node.model_fields:
            return False
        ann = node.model_fields[part].annotation
        node = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return True


def test_every_config_key_named_in_the_code_exists():
    missing = []
    for path in sorted(_ROOT.glob("*/**/*.py")):
        if path.parts[len(_ROOT.parts)] in {"tests", ".venv", "demo", "build"}:
            continue
        missing += [f"{path.relative_to(_ROOT)}:{line}: {key}" for line, key in named_keys(path.read_text())]
    missing = [m for m in missing if not key_exists(m.rsplit(": ", 1)[1])]
    assert missing == []


def test_a_message_naming_a_wrong_key_is_caught():
    src = 'raise FileNotFoundError(f"looked for {p} (from eval.fid.inception_path); or set evaluate.inception_path")'
    keys = [k for _, k in named_keys(src)]
    assert keys == ["eval.fid.inception_path", "evaluate.inception_path"]
    assert [key_exists(k) for k in keys] == [False, True]
    assert [k for _, k in named_keys('x = "set model.entity_layerz=-1 or train.txt or model.segmentation"')] == ["model.entity_layerz"]
    assert not key_exists("model.entity_layerz")

"""One validated configuration object, loaded from YAML profiles in ``configs/``.

A profile is a YAML file (``configs/<name>.yaml``) or a path to one. Values can be
overridden with ``key.sub=value`` strings (from the CLI or deployment parameters).
Every value is checked before any work starts; a bad one raises ``ConfigError``
naming the key, what was given and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FrameSampling(_Section):
    """Which frames of a video become the L-frame clip: start, start+stride, ..."""

    count: int = Field(14, ge=2, description="L, frames per clip")
    stride: int = Field(1, ge=1)
    start: int = Field(0, ge=0)

    def needed(self) -> int:
        return self.start + (self.count - 1) * self.stride + 1

    def indices(self) -> list[int]:
        return [self.start + i * self.stride for i in range(self.count)]


class LKTracker(_Section):
    """OpenCV pyramidal Lucas-Kanade with a forward-backward check."""

    win_size: int = Field(9, ge=5, description="LK window; small windows keep small entities apart from their background")
    max_level: int = Field(3, ge=0)
    fb_threshold_px: float = Field(1.0, gt=0)
    grid_step_px: int = Field(4, ge=1, description="spacing of the points tracked around the centre")
    min_points: int = Field(3, ge=1, description="fewer surviving points than this = entity lost")


class CoTrackerSettings(_Section):
    """CoTracker from a local checkout; it is not on PyPI and nothing downloads."""

    repo_path: str | None = None
    checkpoint: str | None = None
    grid_size: int = Field(30, ge=2)


class TrackerSettings(_Section):
    kind: Literal["lk", "cotracker"] = "lk"
    lk: LKTracker = LKTracker()
    cotracker: CoTrackerSettings = CoTrackerSettings()


class LabelsSettings(_Section):
    frames: FrameSampling = FrameSampling()
    resolution: tuple[int, int] = Field((256, 256), description="(height, width) of the labels")
    trajectory_source: Literal["mask-center", "tracker"] = "mask-center"
    tracker: TrackerSettings = TrackerSettings()
    include_void: bool = False
    min_area_px: int = Field(4, ge=1, description="first-frame entities smaller than this are skipped")
    chunk_size: int = Field(4, ge=1, description="videos per Ray task")
    frames_cache: bool = True

    @field_validator("resolution")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 8:
            raise ValueError("height and width must be at least 8")
        return v


class RuntimeSettings(_Section):
    """Where the heavy work runs. ``ray_address`` (or RAY_ADDRESS) joins a cluster."""

    ray_address: str | None = None
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray (None = all)")
    task_num_cpus: float = Field(1.0, gt=0)
    task_num_gpus: float = Field(0.0, ge=0)
    task_memory_mb: int | None = Field(None, ge=1)
    max_retries: int = Field(2, ge=0, description="Ray retries of a task whose worker died")


class Config(_Section):
    profile: str = "custom"
    labels: LabelsSettings = LabelsSettings()
    runtime: RuntimeSettings = RuntimeSettings()

    def digest(self) -> str:
        """Stable short hash of the values (not of the profile name)."""
        payload = self.model_dump(mode="json", exclude={"profile"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key '{dotted}': '{part}' is a value, not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def _explain(err: ValidationError, source: str) -> ConfigError:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        if e["type"] == "extra_forbidden":
            lines.append(f"config key '{key}' is unknown ({source})")
            continue
        got = e.get("input")
        lines.append(f"config key '{key}': {e['msg']}; got {got!r} ({source})")
    return ConfigError("; ".join(lines))


def profile_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        return p
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(x.stem for x in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"config profile '{name_or_path}' not found in {CONFIG_DIR}; allowed: {', '.join(known)}")
    return candidate


def load_config(name_or_path: str = "tiny", overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load a profile, apply ``key.sub=value`` overrides, validate everything."""
    path = profile_path(name_or_path)
    tree = yaml.safe_load(path.read_text()) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    tree.setdefault("profile", path.stem)
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides or [])
    for key, value in items:
        _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise _explain(err, str(path)) from None

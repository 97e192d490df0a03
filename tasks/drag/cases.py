"""Cases: the official user-study folder format (``demo.jpg``, ``demo.json``, mask JPEGs), readable
by ``tasks.user_study.read_user_study_case``; saved to a folder or downloaded as a zip."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from core.config import Config
from core.tables import Workdir
from tasks.drag.case import DragCase
from tasks.drag.common import DragError
from tasks.user_study import write_user_study_case

CASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_case_name(name: str) -> str:
    name = (name or "").strip()
    if not CASE_NAME.match(name):
        raise DragError(
            f"case name {name!r} must start with a letter or digit and use only letters, digits, '.', '_' and '-' (at most 64)"
        )
    return name


def save_case(folder: str | os.PathLike, case: DragCase, overwrite: bool = False) -> Path:
    """Write the case in the user-study folder format; the trajectories are the model's (anchored, clipped)."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise DragError(f"{folder} already exists and is not empty; choose another case name")
    write_user_study_case(folder, case.image, case.masks, case.trajectories)
    return folder


def case_zip(case: DragCase, name: str) -> bytes:
    """The saved case as a zip (one folder ``name/``), for downloading."""
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        write_user_study_case(root, case.image, case.masks, case.trajectories)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(root.iterdir()):
                z.write(p, f"{name}/{p.name}")
    return buf.getvalue()


def cases_root(cfg: Config, wd: Workdir) -> str:
    """Where the page saves cases: drag.cases_dir, else evaluate.user_study_dir, else <workdir>/user-study."""
    return cfg.drag.cases_dir or cfg.evaluate.user_study_dir or wd.path("user-study")


def case_summary(case: DragCase) -> str:
    """One JSON line describing the case (for the CLI's output)."""
    return json.dumps({
        "entities": [
            {"camera": e.camera, "method": e.method, "area_px": int(e.mask.sum()), "radius_px": round(e.radius, 1),
             "trajectory": np.round(e.trajectory, 1).tolist()}
            for e in case.entities
        ],
        "notes": case.notes,
    })

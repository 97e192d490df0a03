"""Every install a user runs resolves from the package registry: pins are name==version, nothing else.

A pin to a local wheel, a URL or a VCS checkout installs on the machine that wrote it and
fails everywhere else (it happened: `streamlit-image-coordinates @ file:///tmp/...whl`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")
REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?\s*([<>=!~]=?[^@;]*)?(;.*)?$")


def _name(line: str) -> str:
    return re.split(r"[\[<>=!~ ;@]", line, maxsplit=1)[0].strip().lower().replace("_", "-").replace(".", "-")


def bad_pins(text: str, source: str) -> list[str]:
    """One message per line of a constraints file that is not ``name==version``."""
    out = []
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if not PIN.match(line):
            out.append(f"{source} line {no}: {raw.strip()!r} is not name==version from the registry")
    return out


def bad_requirements(pyproject: dict, source: str) -> list[str]:
    """Dependencies in pyproject.toml that name a path, URL or VCS instead of a registry name."""
    project = pyproject.get("project", {})
    reqs = [("dependencies", r) for r in project.get("dependencies", [])]
    for extra, items in project.get("optional-dependencies", {}).items():
        reqs += [(f"optional-dependencies.{extra}", r) for r in items]
    reqs += [("build-system.requires", r) for r in pyproject.get("build-system", {}).get("requires", [])]
    return [f"{source} {where}: {r!r} is not a registry requirement" for where, r in reqs if not REQUIREMENT.match(r.strip())]


def test_constraints_are_all_name_equals_version():
    assert bad_pins((ROOT / "constraints.txt").read_text(), "constraints.txt") == []


def test_a_planted_file_pin_is_caught_and_named(tmp_path):
    text = (ROOT / "constraints.txt").read_text().splitlines()
    text.insert(5, "streamlit-image-coordinates @ file:///tmp/sic/streamlit_image_coordinates-0.4.1-py3-none-any.whl")
    text.insert(7, "mylib @ git+https://github.com/me/mylib@main")
    text.insert(9, "other==")
    found = bad_pins("\n".join(text), "constraints.txt")
    assert len(found) == 3
    assert found[0].startswith("constraints.txt line 6: 'streamlit-image-coordinates @ file:///tmp/")
    assert "line 8: 'mylib @ git+https" in found[1] and "line 10: 'other=='" in found[2]


def test_pyproject_names_only_registry_packages():
    assert bad_requirements(tomllib.loads((ROOT / "pyproject.toml").read_text()), "pyproject.toml") == []
    planted = {"project": {"dependencies": ["torch", "sic @ file:///tmp/x.whl", "./vendor/pkg"]}}
    assert [m.split(": ")[1] for m in bad_requirements(planted, "pyproject.toml")] == ["'sic @ file:///tmp/x.whl' is not a registry requirement",
                                                                                      "'./vendor/pkg' is not a registry requirement"]


def test_every_dependency_has_a_pin():
    """`make install` installs with -c constraints.txt: an unpinned dependency floats to whatever is newest."""
    pinned = {_name(line) for line in (ROOT / "constraints.txt").read_text().splitlines() if line.strip() and not line.startswith("#")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"]) + [r for items in project.get("optional-dependencies", {}).values() for r in items]
    assert sorted(_name(d) for d in deps if _name(d) not in pinned) == []

"""The documentation's links stay inside the repository and point at files that exist.

For README.md and every docs/*.md: every relative markdown link ``[text](path)`` and image
``![alt](path)`` (and reference definitions ``[name]: path``) must resolve to an existing file
inside the repository; ``http(s)://`` and ``mailto:`` links and pure ``#anchors`` are skipped, a
``#fragment`` is stripped (and, for a link to a markdown file, must name one of its headings).
A link that climbs out of the repository, or is absolute, fails even when its target exists.
Links inside code (fenced blocks, inline spans) are not links and are ignored.

The code's own pointers to the docs (``docs/<name>.md`` in strings and comments of the
packages) must exist too. Each checker is also run on planted bad links, so the tests
cannot pass vacuously.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "eval", "model", "tasks", "flows", "dashboard")

_FENCE = re.compile(r"^([ \t]*)(```|~~~)[^\n]*\n.*?^\1\2[ \t]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
_SKIPPED = ("http://", "https://", "mailto:")
_DOC_REF = re.compile(r"docs/[A-Za-z_]+\.md")


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every docs/*.md of ``root``."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _without_fences(text: str) -> str:
    """``text`` with fenced code blocks blanked out (their lines kept as empty lines)."""
    return _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def _without_code(text: str) -> str:
    """``text`` with fenced code blocks and inline code spans blanked out (they hold no links)."""
    return _INLINE_CODE.sub("code", _without_fences(text))


def links(text: str) -> list[str]:
    """Every link and image target of a markdown text, in order (code excluded)."""
    text = _without_code(text)
    return [m.group(1) for m in _LINK.finditer(text)] + [m.group(1) for m in _REFERENCE.finditer(text)]


def heading_anchors(markdown: Path) -> set[str]:
    """The anchors GitHub gives the headings of a markdown file (lower case, punctuation dropped,
    spaces to hyphens, repeats numbered)."""
    seen: dict[str, int] = {}
    out = set()
    for line in _without_fences(markdown.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def check_file(md: Path, root: Path = ROOT) -> list[str]:
    """The broken links of one markdown file, each as 'file: link (why)'."""
    root = root.resolve()
    name = md.relative_to(root) if md.resolve().is_relative_to(root) else md
    problems = []
    for link in links(md.read_text(encoding="utf-8")):
        if link.startswith(_SKIPPED) or link.startswith("#"):
            continue
        path, _, fragment = link.partition("#")
        path = unquote(path)
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", path):
            problems.append(f"{name}: {link} (a URL that is not http(s) or mailto: it does not point into the repository)")
            continue
        if path.startswith("/"):
            problems.append(f"{name}: {link} (absolute path: write it relative to {name})")
            continue
        target = (md.parent / path).resolve()
        if not target.is_relative_to(root):
            problems.append(f"{name}: {link} (climbs out of the repository to {target})")
        elif not target.is_file():
            problems.append(f"{name}: {link} (no such file: {target.relative_to(root)})")
        elif fragment and target.suffix == ".md" and fragment.lower() not in heading_anchors(target):
            problems.append(f"{name}: {link} (no heading '#{fragment}' in {target.relative_to(root)})")
    return problems


def check_docs(root: Path = ROOT) -> list[str]:
    problems = []
    for md in doc_files(root):
        if not md.is_file():
            problems.append(f"{md.relative_to(root)}: missing")
            continue
        problems += check_file(md, root)
    return problems


def code_doc_refs(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, list[str]]:
    """``docs/<name>.md`` -> the .py files of ``packages`` that mention it."""
    refs: dict[str, list[str]] = {}
    for pkg in packages:
        for py in sorted((root / pkg).rglob("*.py")):
            for ref in set(_DOC_REF.findall(py.read_text(encoding="utf-8"))):
                refs.setdefault(ref, []).append(str(py.relative_to(root)))
    return refs


def missing_code_refs(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    return [f"{ref} (named in {', '.join(files)})" for ref, files in sorted(code_doc_refs(root, packages).items()) if not (root / ref).is_file()]


# --- the repository's docs --------------------------------------------------------------


def test_every_doc_link_resolves_inside_the_repository():
    files = doc_files()
    assert files[0].name == "README.md" and len(files) > 1, files
    assert sum(len(links(f.read_text(encoding="utf-8"))) for f in files if f.is_file()) > 10  # the scan sees links
    problems = check_docs()
    assert not problems, "broken documentation links:\n" + "\n".join(problems)


def test_code_references_to_docs_exist():
    refs = code_doc_refs()
    assert "docs/tables.md" in refs  # core/schema.py points people there: the scan sees the code
    missing = missing_code_refs()
    assert not missing, "the code names docs that do not exist:\n" + "\n".join(missing)


# --- the checkers catch planted mistakes ------------------------------------------------


def _planted_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (tmp_path / "outside.md").write_text("# Outside\n")  # exists, but not in the repository
    (root / "docs" / "good.md").write_text("# A title\n\n## The `storage` rules: one\n")
    (root / "README.md").write_text(
        "# Readme\n\n"
        "[fine](docs/good.md) [fine anchor](docs/good.md#the-storage-rules-one) [self](#readme)\n"
        "[web](https://example.org/x) [mail](mailto:someone@example.org)\n"
        "[missing](docs/missing.md) and ![missing image](docs/strip.png)\n"
        "[climbs out](../outside.md) [absolute](/etc/passwd) [other scheme](file:///etc/passwd)\n"
        "[bad anchor](docs/good.md#no-such-heading)\n\n"
        "```\n[in a code block](docs/not-a-link.md)\n```\n\n"
        "`[inline code](docs/not-a-link-either.md)`\n\n"
        "[ref]: docs/missing-ref.md\n"
    )
    (root / "docs" / "inner.md").write_text("[up and back](../README.md) [up twice](../../outside.md)\n")
    return root


def test_link_checker_reports_planted_bad_links(tmp_path):
    root = _planted_repo(tmp_path)
    problems = check_docs(root)
    text = "\n".join(problems)
    for bad in ("docs/missing.md", "docs/strip.png", "../outside.md", "/etc/passwd", "file:///etc/passwd",
                "docs/good.md#no-such-heading", "docs/missing-ref.md", "../../outside.md"):
        assert any(p.split(": ", 1)[1].startswith(bad + " ") for p in problems), f"{bad} not reported:\n{text}"
    assert all(p.startswith(("README.md: ", "docs/inner.md: ")) for p in problems), text  # each names its file
    assert "climbs out of the repository" in text
    for fine in ("docs/good.md ", "docs/good.md#the-storage-rules-one", "#readme", "https://", "mailto:",
                 "not-a-link", "../README.md"):
        assert not any(p.split(": ", 1)[1].startswith(fine) for p in problems), f"{fine} wrongly reported:\n{text}"
    assert len(problems) == 8, text


def test_code_reference_checker_reports_a_planted_missing_doc(tmp_path):
    root = _planted_repo(tmp_path)
    (root / "core").mkdir()
    (root / "core" / "thing.py").write_text('"""See docs/good.md and docs/gone.md."""\n')
    assert set(code_doc_refs(root, ("core",))) == {"docs/good.md", "docs/gone.md"}
    assert missing_code_refs(root, ("core",)) == ["docs/gone.md (named in core/thing.py)"]

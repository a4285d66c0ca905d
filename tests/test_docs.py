"""The documentation: the site builds with `mkdocs build --strict` (a broken link, a missing page or a page left
out of the nav fails it), every figure names the script that makes it, and the README's links lead somewhere."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _missing_doc_tools() -> list[str]:
    names = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
    return [name for name in names if importlib.util.find_spec(name) is None]


@pytest.mark.slow  # a few seconds: in the full run, not the quick loop
def test_the_site_builds_strictly(tmp_path):
    missing = _missing_doc_tools()
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed: pip install -e '.[dev]' (mkdocs-material, mkdocstrings[python])"
        )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "models" / "index.html").is_file()


def test_every_figure_in_the_docs_names_the_script_that_makes_it():
    for page in sorted(DOCS.rglob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            for target in IMAGE.findall(line):
                assert (page.parent / target).is_file(), f"{page.name}:{number + 1}: {target} is missing"
                caption = next((text for text in lines[number + 1 :] if text.strip()), "")
                scripts = re.findall(r"python ([\w/.-]+\.py)", caption)
                assert scripts, f"{page.name}:{number + 1}: no 'python <script>.py' under the figure {target}"
                assert all((ROOT / script).is_file() for script in scripts), (page.name, scripts)


def test_readme_links_lead_to_files_in_the_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t for t in LINK.findall(readme) + IMAGE.findall(readme) if "://" not in t and not t.startswith("#")]
    assert targets, "the README links into the docs"
    for target in targets:
        assert (ROOT / target.split("#")[0]).exists(), f"README.md links to {target}, which is not there"


def test_readme_and_docs_tell_no_development_history():
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        found = re.findall(r"\b(?:issue|issues)[ -]?#?\d+|#\d{1,4}\b", text, flags=re.IGNORECASE)
        assert not found, f"{page.relative_to(ROOT)} mentions {found}: history belongs in CHANGELOG.md"

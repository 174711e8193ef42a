"""Every relative link in README.md and docs/ leads somewhere: the file exists and, for a link to
a section, the section does (GitHub's anchor of a heading), so moving a section cannot strand a
link to it."""
from __future__ import annotations

import glob
import os
import re

import pytest

from .conftest import REPO

PAGES = ["README.md", *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: str) -> set[str]:
    """GitHub's anchors of the headings of a Markdown file (outside code blocks)."""
    found, fence = set(), False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("```"):
                fence = not fence
            elif not fence and re.match(r"#{1,6} ", line):
                title = line.split(" ", 1)[1].strip().lower()
                found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_the_readme_stays_a_front_door():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) <= 260


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_lead_to_existing_files_and_sections(page):
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, section = target.partition("#")
        resolved = os.path.normpath(os.path.join(REPO, os.path.dirname(page), path)) if path else \
            os.path.join(REPO, page)
        if not os.path.exists(resolved):
            broken.append(target)
        elif section and (not resolved.endswith(".md") or section not in anchors(resolved)):
            broken.append(target)
    assert not broken, f"{page}: {broken}"

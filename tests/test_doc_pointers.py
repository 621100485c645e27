"""Measured figures live in docs/, and code points at them as ``(docs/PAGE.md, 'Heading')`` (or with double quotes):
every such pointer in flows/, tasks/ and sql/ names a page that exists and a heading on it
(the heading may go on after the words quoted)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POINTER = re.compile(r"""docs/([\w-]+\.md),\s*(?:#\s*|--\s*)?(?:'([^']+)'|"([^"]+)")""")


def pointers() -> list[tuple[str, str, str]]:
    found = []
    for folder in ("flows", "tasks", "sql"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".sql"):
                continue
            text = path.read_text(encoding="utf-8")
            for m in POINTER.finditer(text):
                # a heading quoted across a line break: drop the comment marks and indentation
                heading = " ".join(re.sub(r"^\s*(#|--)?\s*", "", part) for part in (m.group(2) or m.group(3)).splitlines())
                found.append((str(path.relative_to(ROOT)), m.group(1), heading))
    return found


def test_code_points_at_docs():
    assert len(pointers()) >= 10


@pytest.mark.parametrize(("source", "page", "heading"), pointers())
def test_pointer_names_a_page_and_a_heading(source, page, heading):
    doc = ROOT / "docs" / page
    assert doc.is_file(), f"{source} points at docs/{page}, which does not exist"
    headings = [line.lstrip("#").strip() for line in doc.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    assert any(h.startswith(heading) for h in headings), f"{source}: docs/{page} has no heading {heading!r}"

"""BENCHMARKS.md is shared: each script that measures something owns `## ` sections of it.

`replace_section` rewrites one section (title line to the next `## ` title) and keeps every
other section as it is, so running one script never drops another script's numbers. The file is
replaced atomically.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_TITLE = re.compile(r"^## (.+)$", re.MULTILINE)


def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(text before the first `## ` title, [(title, section text including its title line)])."""
    marks = list(_TITLE.finditer(text))
    if not marks:
        return text, []
    head = text[: marks[0].start()]
    sections = []
    for k, mark in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(text)
        sections.append((mark.group(1).strip(), text[mark.start() : end]))
    return head, sections


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def replace_section(path: Path, title: str, body: str) -> None:
    """Put `## title` + `body` in place of the section of that title (appended when absent)."""
    block = f"## {title}\n\n{body.strip()}\n\n"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    head, sections = split_sections(text)
    titles = [t for t, _ in sections]
    if title in titles:
        sections[titles.index(title)] = (title, block)
    else:
        if sections and not sections[-1][1].endswith("\n\n"):
            sections[-1] = (sections[-1][0], sections[-1][1].rstrip("\n") + "\n\n")
        sections.append((title, block))
    _write(path, (head + "".join(s for _, s in sections)).rstrip("\n") + "\n")


def keep_foreign_sections(path: Path, text: str) -> str:
    """`text` (a whole new file) plus the sections of the current file whose titles it lacks."""
    if not path.exists():
        return text
    _, new_sections = split_sections(text)
    own = {t for t, _ in new_sections}
    _, old_sections = split_sections(path.read_text(encoding="utf-8"))
    extra = [s for t, s in old_sections if t not in own]
    if not extra:
        return text
    return text.rstrip("\n") + "\n\n" + "".join(s.rstrip("\n") + "\n\n" for s in extra).rstrip("\n") + "\n"

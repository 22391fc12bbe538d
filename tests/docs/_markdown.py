"""Reading the docs as data: fenced code blocks, inline code spans, tables and sections of
README.md and docs/*.md, so tests can hold them against the code."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
# how a shown command line starts the program: `ferry`, `.venv/bin/ferry`, `python -m ferry`
_PROGRAM = re.compile(r"^(?:\S*/)?ferry$")


@dataclass(frozen=True)
class Shown:
    """One ``ferry ...`` command shown in a page: its arguments after the program name."""

    page: str
    line: int
    text: str
    args: tuple[str, ...]
    synopsis: bool  # an inline usage line (`[--opt]`, `A|B`): only option names are checked

    def where(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _program_args(words: list[str]) -> list[str] | None:
    """The arguments after ``ferry`` in a shell line, past env assignments and
    ``python -m``; None when the line does not run ferry."""
    i = 0
    while i < len(words) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[i]):
        i += 1
    rest = words[i:]
    if rest[:1] and _PROGRAM.match(rest[0]):
        return rest[1:]
    if len(rest) >= 3 and rest[0].endswith("python") and rest[1:3] == ["-m", "ferry"]:
        return rest[3:]
    return None


_OPERATORS = {">", ">>", "<", "&", "|", "&&", "||", ";", "2>", "2>&1"}


def until_operator(words: list[str]) -> list[str]:
    """The words of the first command of a shell line (before a redirect, pipe or ``&``)."""
    for i, word in enumerate(words):
        if word in _OPERATORS or word.startswith((">", "2>")):
            return words[:i]
    return words


def shown_commands(pages: list[Path] = PAGES) -> list[Shown]:
    """Every ``ferry ...`` command line in the fenced code blocks, and every inline code span
    that starts with ``ferry `` (the README's CLI table, headings of docs/cli.md)."""
    found: list[Shown] = []
    for page in pages:
        text = page.read_text()
        name = page.relative_to(ROOT).as_posix()
        for block in _FENCE.finditer(text):
            start = _line_of(text, block.start(1))
            lines = block.group(1).split("\n")
            n = 0
            while n < len(lines):
                first = n
                line = lines[n]
                while line.endswith("\\") and n + 1 < len(lines):
                    n += 1
                    line = line[:-1] + " " + lines[n].strip()
                n += 1
                try:
                    words = shlex.split(line, comments=True)
                except ValueError:  # not shell (program output, JSON, Python)
                    continue
                args = _program_args(until_operator(words))
                if args is not None:
                    synopsis = any(re.match(r"^\[(-|[A-Z_]+\]?$)", w) for w in args)
                    found.append(Shown(name, start + first, line.strip(), tuple(args),
                                       synopsis))
        for span in _INLINE.finditer(text):
            code = span.group(1)
            if code.startswith("ferry ") or code == "ferry":
                # prose mentions (`ferry batch --key`) are fragments: names are checked
                words = code.replace("|", " ").split()
                found.append(Shown(name, _line_of(text, span.start()), code,
                                   tuple(words[1:]), True))
    return found


def sections(page: Path) -> list[tuple[str, str]]:
    """(heading line, body up to the next heading of the same or a higher level)."""
    lines = page.read_text().split("\n")
    heads = [(i, len(m.group(1))) for i, line in enumerate(lines)
             if (m := re.match(r"^(#+) ", line))]
    out = []
    for k, (i, level) in enumerate(heads):
        end = next((j for j, lv in heads[k + 1:] if lv <= level), len(lines))
        out.append((lines[i], "\n".join(lines[i + 1:end])))
    return out


def table_rows(markdown: str, first_header: str) -> list[list[str]]:
    """The body rows of every table whose first header cell is ``first_header``, as cells
    stripped of surrounding spaces (pipes escaped as \\| inside cells are kept)."""
    rows: list[list[str]] = []
    lines = markdown.split("\n")
    tables = 0
    for i, line in enumerate(lines):
        cells = _cells(line)
        if cells and cells[0] == first_header and i + 1 < len(lines) and set(
                lines[i + 1].replace("|", "").strip()) <= set("-: "):
            tables += 1
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(_cells(row))
    assert tables, f"no table with first column {first_header!r}"
    return rows


def _cells(line: str) -> list[str]:
    if not line.startswith("|"):
        return []
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [p.strip().replace("\\|", "|") for p in parts]

"""How an import problem is reported: an ``Issue`` names the file, column and row.

This module exists because every stage of an import reports problems the same way
(the Parquet files in keyart.jobs.world.import_validate, the manifest in
keyart.jobs.world.import_manifest, ``--now`` in keyart.jobs.world.import_swap) and
callers (the CLI) catch one error type, ``WorldImportError``.

Every problem is counted; the first MAX_ISSUES_PER_FILE of each file are kept (with
their file, column and row) and the rest of that file is only counted, so a file
with a million bad rows neither floods the report nor hides the other files' problems.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from keyart.errors import KeyartError

MAX_ISSUES_PER_FILE = 20
MAX_ISSUES = MAX_ISSUES_PER_FILE  # the former name (the cap was global, it is now per file)


@dataclass(frozen=True)
class Issue:
    file: str
    column: str | None
    row: int | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.column is not None:
            where += f", column '{self.column}'"
        if self.row is not None:
            where += f", row {self.row}"
        return f"{where}: {self.message}"


def _more_line(file: str, n: int) -> str:
    return f"{file}: and {n} more problem{'s' if n != 1 else ''}"


class WorldImportError(KeyartError):
    """The directory is not a valid world. ``issues`` lists the kept problems (the
    first MAX_ISSUES_PER_FILE of each file), each naming the file, column and row;
    ``more`` counts, per file, the problems found beyond those.

    The message lists every kept issue, one per line, then one line per file with
    more problems (``images.parquet: and 37 more problems``); a single problem is
    one line ``world import: <file>, column '<col>', row <n>: <problem>``.
    """

    def __init__(self, issues: Iterable[Issue], more: Mapping[str, int] | None = None) -> None:
        self.issues = list(issues)
        self.more = {f: n for f, n in (more or {}).items() if n > 0}
        super().__init__(self._message())

    @property
    def total(self) -> int:
        """Every problem found, the ones not kept included."""
        return len(self.issues) + sum(self.more.values())

    def lines(self) -> list[str]:
        """One line per kept issue, then one ``<file>: and N more problems`` per file."""
        return [str(i) for i in self.issues] + [_more_line(f, n) for f, n in self.more.items()]

    def _message(self) -> str:
        lines = self.lines()
        if not lines:
            return "world import: invalid world"
        if len(lines) == 1:
            return f"world import: {lines[0]}"
        return f"world import: {self.total} problems\n" + "\n".join(f"  {ln}" for ln in lines)

    @property
    def first(self) -> Issue:
        return self.issues[0]


class IssueLog:
    """The problems found so far: the first MAX_ISSUES_PER_FILE of each file in
    ``items``, the number of later ones of each file in ``more``."""

    def __init__(self, per_file: int = MAX_ISSUES_PER_FILE) -> None:
        self.per_file = per_file
        self.items: list[Issue] = []
        self.more: dict[str, int] = {}
        self._kept: dict[str, int] = {}

    def room(self, file: str) -> int:
        """How many more issues of ``file`` would be kept."""
        return max(0, self.per_file - self._kept.get(file, 0))

    def add(self, file: str, column: str | None, row: int | None, message: str) -> None:
        if self.room(file):
            self.items.append(Issue(file, column, row, message))
            self._kept[file] = self._kept.get(file, 0) + 1
        else:
            self.more[file] = self.more.get(file, 0) + 1

    def count(self, file: str, n: int) -> None:
        """Count ``n`` problems of ``file`` without keeping them (beyond the cap)."""
        if n > 0:
            self.more[file] = self.more.get(file, 0) + n

    @property
    def total(self) -> int:
        """Every problem added or counted so far."""
        return len(self.items) + sum(self.more.values())

    def error(self) -> WorldImportError:
        return WorldImportError(self.items, self.more)

    def __bool__(self) -> bool:
        return self.total > 0


__all__ = ["MAX_ISSUES", "MAX_ISSUES_PER_FILE", "Issue", "IssueLog", "WorldImportError"]

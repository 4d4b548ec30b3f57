"""How an import problem is reported: an ``Issue`` names the file, column and row.

This module exists because every stage of an import reports problems the same way
(the Parquet files in keyart.jobs.world.import_validate, the manifest in
keyart.jobs.world.import_manifest, ``--now`` in keyart.jobs.world.import_swap) and
callers (the CLI) catch one error type, ``WorldImportError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyart.errors import KeyartError

MAX_ISSUES = 20


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


class WorldImportError(KeyartError):
    """The directory is not a valid world; ``issues`` lists every problem found
    (up to MAX_ISSUES), each naming the file, column and row."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = list(issues)
        first = str(self.issues[0]) if self.issues else "invalid world"
        more = len(self.issues) - 1
        extra = ""
        if more > 0:
            extra = f" (and {more} more: " + "; ".join(str(i) for i in self.issues[1:4])
            extra += "; ..." if more > 3 else ""
            extra += ")"
        super().__init__(f"world import: {first}{extra}")

    @property
    def first(self) -> Issue:
        return self.issues[0]


class IssueLog:
    """The problems found so far, up to MAX_ISSUES (later ones are dropped)."""

    def __init__(self) -> None:
        self.items: list[Issue] = []

    def add(self, file: str, column: str | None, row: int | None, message: str) -> None:
        if len(self.items) < MAX_ISSUES:
            self.items.append(Issue(file, column, row, message))

    def __bool__(self) -> bool:
        return bool(self.items)


__all__ = ["MAX_ISSUES", "Issue", "IssueLog", "WorldImportError"]

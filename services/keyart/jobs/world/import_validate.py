"""Validation of the Parquet files of a world directory before it is imported.

This module exists so that every check a file goes through (readable Parquet,
known and present columns, types, nulls, vocabularies, ranges, unique ids,
cross-file references) is one small function, and so that each problem is
reported the same way: an ``Issue`` (keyart.jobs.world.import_issues) naming the
file, the column and the (0-based) row. The format itself is declared in
keyart.jobs.world.import_schema; the manifest is read by
keyart.jobs.world.import_manifest.

A column reports at most its first problem; value checks run only on files whose
structure (columns and types) is valid, and references only when every file is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from keyart.jobs.world.import_issues import Issue, IssueLog, WorldImportError
from keyart.jobs.world.import_manifest import Manifest, read_manifest
from keyart.jobs.world.import_schema import CROPS, IMAGES, TABLE_KEYS, TABLES, TITLES, VIEWING, Column, Table

# The first bad value of a column: (row, message).
Problem = tuple[int, str]
Check = Callable[[pd.Series, Column, np.ndarray], Problem | None]


# ----------------------------------------------------------------------------- helpers


def _short(v: Any) -> str:
    text = repr(v.tolist() if hasattr(v, "tolist") and not isinstance(v, str) else v)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_true(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else None


def _first(mask: np.ndarray, message: Callable[[int], str]) -> Problem | None:
    """The first row where ``mask`` holds, with its message."""
    row = _first_true(mask)
    return None if row is None else (row, message(row))


def _is_string(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t))


def _is_string_list(t: pa.DataType) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        return False
    return _is_string(t.value_type)


_TYPE_OK: dict[str, Callable[[pa.DataType], bool]] = {
    "string": _is_string,
    "int": lambda t: bool(pa.types.is_integer(t) or pa.types.is_null(t)),
    "float": lambda t: bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)),
    "bool": lambda t: bool(pa.types.is_boolean(t) or pa.types.is_null(t)),
    "list<string>": _is_string_list,
    "timestamp": lambda t: bool(pa.types.is_timestamp(t)),
}


def _type_ok(kind: str, t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return _TYPE_OK[kind](t)


# ----------------------------------------------------------------------------- structure


def _read_parquet(path: Path, file: str, issues: IssueLog) -> pa.Table | None:
    try:
        return pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - not parquet, truncated, ...
        issues.add(file, None, None, f"cannot read as Parquet: {' '.join(str(exc).split())[:200]}")
        return None


def _unknown_column(name: str, spec: Table) -> str:
    hidden = name.startswith("latent_") or name == "clickbait"
    hint = " (hidden ground truth is never imported)" if hidden else ""
    return f"unknown column{hint}; expected columns: {', '.join(spec.names)}"


def _check_names(table: pa.Table, spec: Table, issues: IssueLog) -> bool:
    """Report unknown columns; False (the file is unusable) on a duplicated column."""
    names = table.schema.names
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        issues.add(spec.file, dup[0], None, "column appears more than once")
        return False
    known = set(spec.names)
    for name in names:
        if name not in known:
            issues.add(spec.file, name, None, _unknown_column(name, spec))
    return True


def _missing_problem(col: Column) -> tuple[int | None, str] | None:
    return (None, "required column is missing") if col.required else None


def _type_problem(col: Column, arrow_col: pa.ChunkedArray) -> tuple[int | None, str] | None:
    if not _type_ok(col.kind, arrow_col.type):
        values = arrow_col.to_pylist()
        row = next((i for i, v in enumerate(values) if v is not None), None)
        got = f"{arrow_col.type}" + (f" ({_short(values[row])})" if row is not None else "")
        return row, f"expected {col.kind}, got {got}"
    if col.kind == "timestamp" and arrow_col.type.tz is None:
        row = _first_true(~np.asarray(arrow_col.is_null().to_pylist(), dtype=bool))
        return (0 if row is None else row), (
            f"timestamps must be timezone-aware (got {arrow_col.type} without a time zone; "
            "store UTC as timestamp[us, tz=UTC])"
        )
    return None


def _check_types(table: pa.Table, spec: Table, issues: IssueLog) -> bool:
    """Report missing required columns and wrongly typed ones; True when there are none."""
    names = table.schema.names
    ok = True
    for col in spec.columns:
        present = col.name in names
        problem = _type_problem(col, table.column(col.name)) if present else _missing_problem(col)
        if problem is not None:
            issues.add(spec.file, col.name, *problem)
            ok = False
    return ok


def _default_column(col: Column, n: int) -> Any:
    if col.kind != "list<string>":
        return col.default
    return [list(col.default) if isinstance(col.default, tuple) else col.default] * n


_NORMALIZE: dict[str, Callable[[pd.Series], Any]] = {
    "list<string>": lambda s: [None if v is None else [str(x) for x in v] for v in s],
    "timestamp": lambda s: pd.to_datetime(s, utc=True).dt.as_unit("ns"),
}


def _to_frame(table: pa.Table, spec: Table) -> pd.DataFrame:
    """The table as a DataFrame of exactly the declared columns, defaults filled in."""
    df = table.to_pandas()
    for col in spec.columns:
        if col.name not in df.columns:
            df[col.name] = _default_column(col, len(df))
        elif col.kind in _NORMALIZE:
            df[col.name] = _NORMALIZE[col.kind](df[col.name])
    return df[spec.names]


def _read_table(path: Path, spec: Table, issues: IssueLog) -> pd.DataFrame | None:
    """Read and type-check one file; None if it cannot be used further (it has
    problems, or an earlier file had)."""
    table = _read_parquet(path, spec.file, issues)
    if table is None or not _check_names(table, spec, issues):
        return None
    if not _check_types(table, spec, issues) or issues:
        return None
    return _to_frame(table, spec)


# ----------------------------------------------------------------------------- values


def _floats(s: pd.Series) -> np.ndarray:
    return s.to_numpy(dtype=float, na_value=np.nan)


def _not_allowed(value: Any, vocab: tuple[str, ...]) -> str:
    return f"{value!r} is not allowed (allowed: {', '.join(vocab)})"


def _empty_string(s: pd.Series, col: Column, present: np.ndarray) -> Problem | None:
    if not col.non_empty:
        return None
    vals = s.to_numpy(dtype=object)
    blank = np.array([v == "" or (isinstance(v, str) and not v.strip()) for v in vals], dtype=bool)
    return _first(present & blank, lambda row: "empty string")


def _string_vocab(s: pd.Series, col: Column, present: np.ndarray) -> Problem | None:
    vocab = col.vocab
    if vocab is None:
        return None
    vals = s.to_numpy(dtype=object)
    bad = present & ~np.isin(vals.astype(str), list(set(vocab)))
    return _first(bad, lambda row: _not_allowed(vals[row], vocab))


def _empty_list(s: pd.Series, col: Column, present: np.ndarray) -> Problem | None:
    if not col.non_empty:
        return None
    empty = np.array([v is not None and len(v) == 0 for v in s], dtype=bool)
    return _first(present & empty, lambda row: "empty list; at least one value is required")


def _list_vocab(s: pd.Series, col: Column, present: np.ndarray) -> Problem | None:
    if col.vocab is None:
        return None
    allowed = set(col.vocab)
    for i, v in enumerate(s):
        bad = [x for x in (v or ()) if x not in allowed]
        if bad:
            return i, _not_allowed(bad[0], col.vocab)
    return None


def _not_finite(s: pd.Series, col: Column, present: np.ndarray) -> Problem | None:
    vals = _floats(s)
    return _first(present & ~np.isfinite(vals), lambda row: f"{vals[row]} is not a finite number")


def _below_lo(s: pd.Series, col: Column, present: np.ndarray) -> Problem | None:
    lo = col.lo
    if lo is None:
        return None
    vals = _floats(s)
    bad = present & ((vals <= lo) if col.lo_open else (vals < lo))
    op = ">" if col.lo_open else ">="
    return _first(bad, lambda row: f"{vals[row]:g} is out of range (must be {op} {lo:g})")


def _above_hi(s: pd.Series, col: Column, present: np.ndarray) -> Problem | None:
    hi = col.hi
    if hi is None:
        return None
    vals = _floats(s)
    return _first(present & (vals > hi), lambda row: f"{vals[row]:g} is out of range (must be <= {hi:g})")


def _duplicate(s: pd.Series, col: Column, present: np.ndarray) -> Problem | None:
    if not col.unique:
        return None
    row = _first_true(s.duplicated(keep="first").to_numpy())
    if row is None:
        return None
    first = int(np.flatnonzero((s == s.iloc[row]).to_numpy())[0])
    return row, f"duplicate id {s.iloc[row]!r} (first at row {first})"


# The value checks of each kind of column, in order; the last check of every kind is
# the uniqueness of ids.
_CHECKS: dict[str, tuple[Check, ...]] = {
    "string": (_empty_string, _string_vocab, _duplicate),
    "list<string>": (_empty_list, _list_vocab, _duplicate),
    "int": (_not_finite, _below_lo, _above_hi, _duplicate),
    "float": (_not_finite, _below_lo, _above_hi, _duplicate),
    "bool": (_duplicate,),
    "timestamp": (_duplicate,),
}


def _nulls(s: pd.Series, col: Column) -> np.ndarray:
    if col.kind == "list<string>":
        return np.array([v is None for v in s], dtype=bool)
    return s.isna().to_numpy()


def _column_problem(s: pd.Series, col: Column) -> Problem | None:
    """The first bad value of one column (nulls first, then the checks of its kind)."""
    nulls = _nulls(s, col)
    if not col.nullable:
        problem = _first(nulls, lambda row: "missing value (null) in a required column")
        if problem is not None:
            return problem
    present = ~nulls
    for check in _CHECKS[col.kind]:
        problem = check(s, col, present)
        if problem is not None:
            return problem
    return None


def _check_values(df: pd.DataFrame, spec: Table, issues: IssueLog) -> None:
    for col in spec.columns:
        problem = _column_problem(df[col.name], col)
        if problem is not None:
            issues.add(spec.file, col.name, *problem)


# ----------------------------------------------------------------------------- references


def _dangling(df: pd.DataFrame, col: str, known: pd.Index, file: str, what: str, issues: IssueLog) -> None:
    row = _first_true(~df[col].isin(known).to_numpy())
    if row is not None:
        issues.add(file, col, row, f"{df[col].iloc[row]!r} is not a known {what}")


def _default_image_problem(title_id: Any, default: Any, owner: Any) -> str | None:
    if owner is None:
        return f"{default!r} is not an image_id of images.parquet"
    if owner != title_id:
        return f"{default!r} belongs to title {owner!r}, not to {title_id!r}"
    return None


def _check_default_images(titles: pd.DataFrame, images: pd.DataFrame, issues: IssueLog) -> None:
    image_title = dict(zip(images["image_id"], images["title_id"]))
    for i, (tid, default) in enumerate(zip(titles["title_id"], titles["default_image_id"])):
        problem = _default_image_problem(tid, default, image_title.get(default))
        if problem is not None:
            issues.add(TITLES.file, "default_image_id", i, problem)
            return


def _check_villains(titles: pd.DataFrame, issues: IssueLog) -> None:
    for i, (villain, cast) in enumerate(zip(titles["villain_actor"], titles["cast"])):
        if isinstance(villain, str) and villain and villain not in cast:
            issues.add(TITLES.file, "villain_actor", i, f"{villain!r} is not in the title's cast")
            return


def _check_crops(crops: pd.DataFrame, images: pd.DataFrame, issues: IssueLog) -> None:
    _dangling(crops, "image_id", pd.Index(images["image_id"]), CROPS.file, "image_id of images.parquet", issues)
    row = _first_true(crops.duplicated(["image_id", "aspect_ratio"]).to_numpy())
    if row is not None:
        issues.add(CROPS.file, "aspect_ratio", row, "duplicate (image_id, aspect_ratio)")


def _check_references(t: dict[str, pd.DataFrame], issues: IssueLog) -> None:
    members, titles, images, viewing = t["members"], t["titles"], t["images"], t["viewing"]
    title_ids = pd.Index(titles["title_id"])
    member_ids = pd.Index(members["member_id"])
    _dangling(images, "title_id", title_ids, IMAGES.file, "title_id of titles.parquet", issues)
    _dangling(viewing, "member_id", member_ids, VIEWING.file, "member_id of members.parquet", issues)
    _dangling(viewing, "title_id", title_ids, VIEWING.file, "title_id of titles.parquet", issues)
    _check_default_images(titles, images, issues)
    _check_villains(titles, issues)
    if "crops" in t:
        _check_crops(t["crops"], images, issues)


# ----------------------------------------------------------------------------- directory


def _validate_file(src: Path, spec: Table, issues: IssueLog) -> pd.DataFrame | None:
    """The normalized table of one file, value-checked; None when missing or unusable."""
    path = src / spec.file
    if not path.is_file():
        if not spec.optional:
            issues.add(spec.file, None, None, f"required file is missing in {src}")
        return None
    before = len(issues.items)
    df = _read_table(path, spec, issues)
    if df is None or len(issues.items) != before:
        return None
    _check_values(df, spec, issues)
    return df


def validate_world_dir(src: Path) -> tuple[dict[str, pd.DataFrame], Manifest]:
    """Read and validate every file of ``src``; raise WorldImportError listing the
    problems. Returns the normalized tables (members, titles, images, viewing and,
    when present, crops) and the manifest."""
    src = Path(src)
    if not src.is_dir():
        raise WorldImportError([Issue(str(src), None, None, "not a directory")])
    issues = IssueLog()
    manifest = read_manifest(src, issues)
    tables: dict[str, pd.DataFrame] = {}
    for spec in TABLES:
        df = _validate_file(src, spec, issues)
        if df is not None:
            tables[TABLE_KEYS[spec.file]] = df
    if not issues:
        _check_references(tables, issues)
    if issues:
        raise WorldImportError(issues.items)
    return tables, manifest


__all__ = ["validate_world_dir"]

"""Validation of the Parquet files of a world directory before it is imported.

This module exists so that every check a file goes through (readable Parquet,
known and present columns, types, nulls, value rules, ranges, unique ids,
cross-file references) is one small function, and so that each problem is
reported the same way: an ``Issue`` (keyart.jobs.world.import_issues) naming the
file, the column and the (0-based) row. The format itself is declared in
keyart.jobs.world.import_schema; the manifest is read by
keyart.jobs.world.import_manifest.

A check reports every row it finds bad (the issue log keeps the first ones of each
file and counts the rest); a value that breaks one check of a column is not checked
again by the later checks of that column. Value checks run only on files whose
structure (columns and types) is valid, and references only when every file is.
Once checked, absent optional columns get their defaults and nulls of nullable
columns theirs (import_schema's docstring lists them).
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
from keyart.jobs.world.import_schema import (
    CROPS,
    IMAGES,
    MANIFEST,
    TABLE_KEYS,
    TABLES,
    TITLES,
    VIEWING,
    Column,
    Table,
    images_table,
    value_problem,
)

# The bad rows of a column (a boolean mask) and the message of a bad row.
Found = tuple[np.ndarray, Callable[[int], str]]
Check = Callable[[pd.Series, Column, np.ndarray], Found | None]


# ----------------------------------------------------------------------------- helpers


def _short(v: Any) -> str:
    text = repr(v.tolist() if hasattr(v, "tolist") and not isinstance(v, str) else v)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_true(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else None


def _report(issues: IssueLog, file: str, column: str, mask: np.ndarray, message: Callable[[int], str]) -> None:
    """One issue per row where ``mask`` holds: the first ones kept, the rest counted."""
    rows = np.flatnonzero(mask)
    keep = min(issues.room(file), len(rows))
    for row in rows[:keep]:
        issues.add(file, column, int(row), message(int(row)))
    issues.count(file, len(rows) - keep)


def _report_rows(issues: IssueLog, file: str, column: str, problems: dict[int, str]) -> None:
    mask = np.zeros(max(problems, default=-1) + 1, dtype=bool)
    mask[list(problems)] = True
    _report(issues, file, column, mask, problems.__getitem__)


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
    if spec.file == IMAGES.file and not hidden:
        hint = " (declare your own image attributes in manifest.json's image_attributes)"
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


def _missing_problem(col: Column, spec: Table) -> tuple[int | None, str] | None:
    if not col.required:
        return None
    if spec.file == IMAGES.file and col.name not in IMAGES.names:
        return None, f"attribute declared in {MANIFEST} (image_attributes) is missing"
    return None, "required column is missing"


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
        problem = _type_problem(col, table.column(col.name)) if present else _missing_problem(col, spec)
        if problem is not None:
            issues.add(spec.file, col.name, *problem)
            ok = False
    return ok


_NORMALIZE: dict[str, Callable[[pd.Series], Any]] = {
    "list<string>": lambda s: [None if v is None else [None if x is None else str(x) for x in v] for v in s],
    "timestamp": lambda s: pd.to_datetime(s, utc=True).dt.as_unit("ns"),
}


def _to_frame(table: pa.Table, spec: Table) -> pd.DataFrame:
    """The declared columns present in the file, as a DataFrame (lists and timestamps
    normalized); the absent ones are added by ``_complete`` after the value checks."""
    df = table.to_pandas()
    present = [c for c in spec.columns if c.name in df.columns]
    for col in present:
        if isinstance(df[col.name].dtype, pd.CategoricalDtype):  # dictionary-encoded strings
            df[col.name] = df[col.name].astype(object).where(df[col.name].notna(), None)
        if col.kind in _NORMALIZE:
            df[col.name] = _NORMALIZE[col.kind](df[col.name])
    return df[[c.name for c in present]]


def _read_table(path: Path, spec: Table, issues: IssueLog) -> pd.DataFrame | None:
    """Read and type-check one file; None if it cannot be used further."""
    table = _read_parquet(path, spec.file, issues)
    if table is None:
        return None
    before = issues.total
    if not _check_names(table, spec, issues):
        return None
    if not _check_types(table, spec, issues) or issues.total != before:
        return None
    return _to_frame(table, spec)


def _default_column(col: Column, df: pd.DataFrame) -> Any:
    if col.default_from is not None:
        return df[col.default_from].to_numpy(copy=True)
    if col.kind != "list<string>":
        return col.default
    return [list(col.default) if isinstance(col.default, tuple) else col.default] * len(df)


def _complete(df: pd.DataFrame, spec: Table) -> pd.DataFrame:
    """Every declared column: absent ones get their default (or a copy of their
    ``default_from`` column), nulls of nullable columns with a default get it."""
    df = df.copy()
    for col in spec.columns:
        if col.name not in df.columns:
            df[col.name] = _default_column(col, df)
        elif col.nullable and col.default is not None and col.kind == "string":
            df[col.name] = df[col.name].astype(object).where(df[col.name].notna(), col.default)
        if col.kind == "float":
            df[col.name] = pd.to_numeric(df[col.name]).astype(float)
    return df[spec.names]


# ----------------------------------------------------------------------------- values


def _floats(s: pd.Series) -> np.ndarray:
    return s.to_numpy(dtype=float, na_value=np.nan)


def _by_value(vals: np.ndarray, present: np.ndarray, problem: Callable[[Any], str | None]) -> Found | None:
    """The rows whose value has a problem, each distinct value judged once."""
    bad: dict[Any, str] = {}
    for v in pd.unique(vals[present]):
        message = problem(v)
        if message is not None:
            bad[v] = message
    if not bad:
        return None
    mask = present & pd.Series(vals).isin(list(bad)).to_numpy()
    return mask, lambda row: bad[vals[row]]


def _empty_string(s: pd.Series, col: Column, present: np.ndarray) -> Found | None:
    if not col.non_empty or col.rule is not None:
        return None
    vals = s.to_numpy(dtype=object)
    blank = np.array([isinstance(v, str) and not v.strip() for v in vals], dtype=bool)
    return present & blank, lambda row: "empty string"


def _string_vocab(s: pd.Series, col: Column, present: np.ndarray) -> Found | None:
    vocab = col.vocab
    if vocab is None:
        return None
    allowed = set(vocab)
    return _by_value(
        s.to_numpy(dtype=object), present,
        lambda v: None if v in allowed else f"{v!r} is not allowed (allowed: {', '.join(vocab)})",
    )


def _string_rule(s: pd.Series, col: Column, present: np.ndarray) -> Found | None:
    rule = col.rule
    if rule is None:
        return None
    allow_empty = not col.non_empty
    return _by_value(s.to_numpy(dtype=object), present, lambda v: value_problem(rule, v, allow_empty=allow_empty))


def _empty_list(s: pd.Series, col: Column, present: np.ndarray) -> Found | None:
    if not col.non_empty:
        return None
    empty = np.array([v is not None and len(v) == 0 for v in s], dtype=bool)
    return present & empty, lambda row: "empty list; at least one value is required"


def _null_element(s: pd.Series, col: Column, present: np.ndarray) -> Found | None:
    bad = np.array([v is not None and any(x is None for x in v) for v in s], dtype=bool)
    return present & bad, lambda row: "null element in the list"


def _list_rule(s: pd.Series, col: Column, present: np.ndarray) -> Found | None:
    rule = col.rule
    if rule is None:
        return None
    judged: dict[str, str | None] = {}
    problems: dict[int, str] = {}
    for i, v in enumerate(s):
        if not present[i]:
            continue
        for x in v:
            if x not in judged:
                judged[x] = value_problem(rule, x)
            if judged[x] is not None:
                problems[i] = str(judged[x])
                break
    mask = np.zeros(len(s), dtype=bool)
    mask[list(problems)] = True
    return mask, problems.__getitem__


def _not_finite(s: pd.Series, col: Column, present: np.ndarray) -> Found | None:
    vals = _floats(s)
    return present & ~np.isfinite(vals), lambda row: f"{vals[row]} is not a finite number"


def _below_lo(s: pd.Series, col: Column, present: np.ndarray) -> Found | None:
    lo = col.lo
    if lo is None:
        return None
    vals = _floats(s)
    with np.errstate(invalid="ignore"):
        bad = present & ((vals <= lo) if col.lo_open else (vals < lo))
    op = ">" if col.lo_open else ">="
    return bad, lambda row: f"{vals[row]:g} is out of range (must be {op} {lo:g})"


def _above_hi(s: pd.Series, col: Column, present: np.ndarray) -> Found | None:
    hi = col.hi
    if hi is None:
        return None
    vals = _floats(s)
    with np.errstate(invalid="ignore"):
        bad = present & (vals > hi)
    return bad, lambda row: f"{vals[row]:g} is out of range (must be <= {hi:g})"


def _duplicate(s: pd.Series, col: Column, present: np.ndarray) -> Found | None:
    if not col.unique:
        return None
    dup = present & s.duplicated(keep="first").to_numpy()
    if not dup.any():
        return None
    kept = s[~s.duplicated(keep="first")]
    first = dict(zip(kept.to_numpy(), kept.index))
    return dup, lambda row: f"duplicate id {s.iloc[row]!r} (first at row {first[s.iloc[row]]})"


# The value checks of each kind of column, in order; the last check of every kind is
# the uniqueness of ids.
_CHECKS: dict[str, tuple[Check, ...]] = {
    "string": (_empty_string, _string_vocab, _string_rule, _duplicate),
    "list<string>": (_null_element, _empty_list, _list_rule, _duplicate),
    "int": (_not_finite, _below_lo, _above_hi, _duplicate),
    "float": (_not_finite, _below_lo, _above_hi, _duplicate),
    "bool": (_duplicate,),
    "timestamp": (_duplicate,),
}


def _nulls(s: pd.Series, col: Column) -> np.ndarray:
    if col.kind == "list<string>":
        return np.array([v is None for v in s], dtype=bool)
    return np.asarray(s.isna().to_numpy(), dtype=bool)


def _check_column(s: pd.Series, col: Column, file: str, issues: IssueLog) -> None:
    """Every bad value of one column (nulls first, then the checks of its kind; a row
    reported by one check is not checked further)."""
    nulls = _nulls(s, col)
    if not col.nullable:
        _report(issues, file, col.name, nulls, lambda row: "missing value (null) in a required column")
    present = ~nulls
    for check in _CHECKS[col.kind]:
        found = check(s, col, present)
        if found is None:
            continue
        mask, message = found
        if mask.any():
            _report(issues, file, col.name, mask, message)
            present = present & ~mask


def _check_values(df: pd.DataFrame, spec: Table, issues: IssueLog) -> None:
    """Check the declared columns present in ``df`` (defaults are valid by construction)."""
    for col in spec.columns:
        if col.name in df.columns:
            _check_column(df[col.name].reset_index(drop=True), col, spec.file, issues)


# ----------------------------------------------------------------------------- references


def _dangling(df: pd.DataFrame, col: str, known: pd.Index, file: str, what: str, issues: IssueLog) -> None:
    values = df[col]
    _report(issues, file, col, ~values.isin(known).to_numpy(),
            lambda row: f"{values.iloc[row]!r} is not a known {what}")


def _default_image_problem(title_id: Any, default: Any, owner: Any) -> str | None:
    if owner is None:
        return f"{default!r} is not an image_id of images.parquet"
    if owner != title_id:
        return f"{default!r} belongs to title {owner!r}, not to {title_id!r}"
    return None


def _first_images(images: pd.DataFrame) -> dict[str, str]:
    """title_id -> its first active image in image_id order (its first image when none
    is active)."""
    ordered = images.assign(_inactive=~images["active"].astype(bool))
    ordered = ordered.sort_values(["title_id", "_inactive", "image_id"], kind="stable")
    first = ordered.drop_duplicates("title_id", keep="first")
    return dict(zip(first["title_id"], first["image_id"]))


def _check_default_images(titles: pd.DataFrame, images: pd.DataFrame, issues: IssueLog) -> None:
    """Check the given default images; derive the absent ones (None: the column was
    not in the file), which needs the title to have an image."""
    image_title = dict(zip(images["image_id"], images["title_id"]))
    first = _first_images(images)
    derived: list[Any] = []
    problems: dict[int, str] = {}
    for i, (tid, default) in enumerate(zip(titles["title_id"], titles["default_image_id"])):
        if default is None:
            default = first.get(tid)
            if default is None:
                problems[i] = (f"title {tid!r} has no image in images.parquet "
                               "(the default image is its first active image)")
        else:
            problem = _default_image_problem(tid, default, image_title.get(default))
            if problem is not None:
                problems[i] = problem
        derived.append(default)
    titles["default_image_id"] = derived
    if problems:
        _report_rows(issues, TITLES.file, "default_image_id", problems)


def _check_villains(titles: pd.DataFrame, issues: IssueLog) -> None:
    problems = {
        i: f"{villain!r} is not in the title's cast"
        for i, (villain, cast) in enumerate(zip(titles["villain_actor"], titles["cast"]))
        if isinstance(villain, str) and villain and villain not in cast
    }
    if problems:
        _report_rows(issues, TITLES.file, "villain_actor", problems)


def _check_crops(crops: pd.DataFrame, images: pd.DataFrame, issues: IssueLog) -> None:
    _dangling(crops, "image_id", pd.Index(images["image_id"]), CROPS.file, "image_id of images.parquet", issues)
    _report(issues, CROPS.file, "aspect_ratio", crops.duplicated(["image_id", "aspect_ratio"]).to_numpy(),
            lambda row: "duplicate (image_id, aspect_ratio)")


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


def _check_tone_genre(manifest: Manifest, titles: pd.DataFrame, issues: IssueLog) -> None:
    genres = {g for gs in titles["genres"] for g in (gs or ())}
    for tone, genre in manifest.tone_genre.items():
        if genre not in genres:
            issues.add(MANIFEST, f"tone_genre.{tone}", None, f"{genre!r} is not a genre of titles.parquet")


# ----------------------------------------------------------------------------- directory


def _validate_file(src: Path, spec: Table, issues: IssueLog) -> pd.DataFrame | None:
    """The table of one file, value-checked and completed with its defaults; None when
    missing or unusable (its structure is wrong)."""
    path = src / spec.file
    if not path.is_file():
        if not spec.optional:
            issues.add(spec.file, None, None, f"required file is missing in {src}")
        return None
    df = _read_table(path, spec, issues)
    if df is None:
        return None
    _check_values(df, spec, issues)
    return _complete(df, spec)


def validate_world_dir(src: Path) -> tuple[dict[str, pd.DataFrame], Manifest]:
    """Read and validate every file of ``src``; raise WorldImportError listing the
    problems. Returns the tables (members, titles, images, viewing and, when present,
    crops), every declared column filled in (images with the manifest's attribute
    columns after the fixed ones), and the manifest."""
    src = Path(src)
    if not src.is_dir():
        raise WorldImportError([Issue(str(src), None, None, "not a directory")])
    issues = IssueLog()
    manifest = read_manifest(src, issues)
    tables: dict[str, pd.DataFrame] = {}
    for spec in TABLES:
        if spec.file == IMAGES.file:
            spec = images_table(manifest.image_attributes)
        df = _validate_file(src, spec, issues)
        if df is not None:
            tables[TABLE_KEYS[spec.file]] = df
    if "titles" in tables:
        _check_tone_genre(manifest, tables["titles"], issues)
    if not issues:
        _check_references(tables, issues)
    if issues:
        raise issues.error()
    return tables, manifest


__all__ = ["validate_world_dir"]

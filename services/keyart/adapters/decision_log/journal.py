"""The write-ahead journal: an acknowledged record survives its process being killed.

A writer's queue lives in memory, so a SIGKILL (or an OOM kill) used to lose whatever
the writer thread had not yet stored: up to one flush interval of acknowledged
impressions. Now every submit first appends its records, as one frame, to a journal
file in the writer's own spool directory, on the caller's thread, before it returns.
A ``write(2)`` into the page cache survives the death of the process (not of the
machine: that is what the store's replication is for), so no fsync is paid per page.

Frames are ``<length:u32><crc32:u32><pickle>``; the pickle holds a list of rows (a
submit's impressions or outcomes) or one page as the page service hands it over (its
shared fields once, then one row per decision), only as builtins and datetimes, and is
read back with an unpickler that refuses every other class, so a journal cannot run code.
A torn or corrupt tail (the kill landed mid-write) ends the file's readable part and is
counted.

Files rotate past ``rotate_bytes``. A sealed file is deleted once the writer has handled
(stored, spooled with fsync, or counted as dropped) every record it holds; the active
file is truncated when the writer has caught up. What a dead process leaves is turned
into spool records by whoever adopts its directory (:mod:`.spool_dirs`), or by the next
writer on the same directory; a record replayed twice is harmless (impressions are
upserts, outcomes are deduplicated by key).
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
import operator
import os
import pickle
import struct
import sys
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path

from keyart.adapters.decision_log.records import encode_features
from keyart.domain import Impression, LoggedPage, Outcome, OutcomeKind, ShadowChoice, frozen_batch_builder

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal-"
JOURNAL_SUFFIX = ".bin"
_HEADER = struct.Struct("<II")
_MAX_FRAME = 256 * 1024 * 1024  # larger "lengths" are corruption, not data

_IMPRESSION = 0
_OUTCOME = 1
_PAGE = 2  # a LoggedPage: (shared fields, field names, rows)
_IMPRESSION_FIELDS = tuple(f.name for f in fields(Impression))
_OUTCOME_FIELDS = tuple(f.name for f in fields(Outcome))
_SHADOWS_AT = _IMPRESSION_FIELDS.index("shadows")
_FEATURES_AT = _IMPRESSION_FIELDS.index("features")
_KIND_AT = _OUTCOME_FIELDS.index("kind")
_impression_row = operator.attrgetter(*_IMPRESSION_FIELDS)
_build_impressions = frozen_batch_builder(Impression)
_outcome_row = operator.attrgetter(*_OUTCOME_FIELDS)
_shadow_row = operator.attrgetter(*(f.name for f in fields(ShadowChoice)))

Record = Impression | Outcome
SpoolAppend = Callable[[list[bytes]], bool]
"""Appends JSON lines to a spool with fsync; False when it refuses them."""


def journal_name(seq: int) -> str:
    return f"{JOURNAL_PREFIX}{seq:010d}{JOURNAL_SUFFIX}"


def journals_in(directory: Path) -> list[Path]:
    """The journal files in ``directory``, oldest first."""
    found = []
    for p in Path(directory).glob(f"{JOURNAL_PREFIX}*{JOURNAL_SUFFIX}"):
        digits = p.name[len(JOURNAL_PREFIX) : -len(JOURNAL_SUFFIX)]
        if digits.isdigit() and p.is_file():
            found.append((int(digits), p))
    return [p for _, p in sorted(found)]


# --- frames -----------------------------------------------------------------------------


def encode_frame(records: Sequence[Record]) -> bytes:
    """One frame holding ``records`` (all of one type, as one submit hands them over).

    Rows are plain tuples in field order; pickle's memo stores the page-level values
    (member, context, time, actors) that the 40 impressions of a page share only once.
    """
    if isinstance(records[0], Impression):
        rows = [_impression_row(r) for r in records]
        if any(row[_SHADOWS_AT] for row in rows):
            rows = [_with_shadow_tuples(row) for row in rows]
        payload = pickle.dumps((_IMPRESSION, rows), protocol=5)
    else:
        payload = pickle.dumps(
            (_OUTCOME, [_with_kind_value(_outcome_row(r)) for r in records]), protocol=5
        )
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def encode_page_frame(page: LoggedPage) -> bytes:
    """One frame holding a page's impressions as the page service built them: the shared
    fields once and the per-decision rows, with no `Impression` objects in between (the
    request thread journals every page: 28 us against 100 us a page of 40)."""
    rows = page.rows
    if "shadows" in page.names:
        at = page.names.index("shadows")
        if any(row[at] for row in rows):
            rows = [_with_shadow_tuples(row, at) for row in rows]
    payload = pickle.dumps((_PAGE, dict(page.shared), tuple(page.names), rows), protocol=5)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _with_shadow_tuples(row: tuple[object, ...], at: int = _SHADOWS_AT) -> tuple[object, ...]:
    """The row with its shadow choices (column `at`) as plain tuples, for the journal."""
    shadows = row[at]
    if not shadows:
        return row
    return row[:at] + (tuple(_shadow_row(c) for c in shadows),) + row[at + 1 :]  # type: ignore[attr-defined]


def _with_shadow_choices(row: tuple[object, ...], at: int = _SHADOWS_AT) -> tuple[object, ...]:
    """The inverse of `_with_shadow_tuples`."""
    shadows = row[at]
    if not shadows:
        return row
    return row[:at] + (tuple(ShadowChoice(*c) for c in shadows),) + row[at + 1 :]  # type: ignore[attr-defined]


def _with_kind_value(row: tuple[object, ...]) -> tuple[object, ...]:
    return row[:_KIND_AT] + (OutcomeKind(row[_KIND_AT]).value,) + row[_KIND_AT + 1 :]


class _RowsOnly(pickle.Unpickler):
    """Unpickles builtins and datetimes only: a journal cannot name any other class."""

    _ALLOWED = {("datetime", "datetime"), ("datetime", "timezone"), ("datetime", "timedelta")}

    def find_class(self, module: str, name: str) -> type:
        if (module, name) in self._ALLOWED:
            return getattr(_dt, name)  # type: ignore[no-any-return]
        raise pickle.UnpicklingError(f"journal frames may not hold {module}.{name}")


def decode_frame(payload: bytes) -> list[Record]:
    frame = _RowsOnly(io.BytesIO(payload)).load()
    if isinstance(frame, tuple) and len(frame) == 4 and frame[0] == _PAGE:
        return _decode_page(*frame[1:])
    if not (isinstance(frame, tuple) and len(frame) == 2):
        raise ValueError("a journal frame that is neither (kind, rows) nor a page")
    kind, rows = frame
    if kind == _IMPRESSION:
        # Built by the batch builder: the writer process decodes every page, and the
        # dataclass constructor took 3.5 us a record (0.14 ms a page) against 0.6 us.
        fields_given = []
        for row in rows:
            if len(row) > len(_IMPRESSION_FIELDS):
                raise ValueError(f"an impression row of {len(row)} fields; this version knows "
                                 f"{len(_IMPRESSION_FIELDS)}")
            if type(row[_FEATURES_AT]) is not bytes:  # a frame journaled when rows held float tuples
                row = row[:_FEATURES_AT] + (encode_features(row[_FEATURES_AT]),) + row[_FEATURES_AT + 1:]
            row = _with_shadow_choices(row)  # stored as plain tuples
            fields_given.append(row)
        return list(_build_impressions({}, _IMPRESSION_FIELDS, fields_given))
    if kind == _OUTCOME:  # the kind is stored as its value
        return [replace(o, kind=OutcomeKind(o.kind)) for o in (Outcome(*row) for row in rows)]
    raise ValueError(f"unknown journal frame kind {kind!r}")


def _decode_page(shared: object, names: object, rows: object) -> list[Record]:
    if not (isinstance(shared, dict) and isinstance(names, tuple) and isinstance(rows, list)):
        raise ValueError("a page frame that is not (shared fields, names, rows)")
    width = len(names)
    if any(len(row) != width for row in rows):
        raise ValueError(f"a page frame row's length differs from its {width} field names")
    # Field names as interned strings, like the class's own: unpickled ones are new objects,
    # and every attribute read of a record keyed by them would compare strings (the store's
    # row building measured 6% slower).
    shared = {sys.intern(k): v for k, v in shared.items()}
    names = tuple(sys.intern(n) for n in names)
    if "shadows" in names:
        at = names.index("shadows")
        if any(row[at] for row in rows):  # most pages run no experiment
            rows = [_with_shadow_choices(row, at) for row in rows]
    return list(_build_impressions(shared, names, rows))  # the rows' lengths are checked above


def next_frame(data: bytes, pos: int = 0) -> tuple[list[Record] | None, int]:
    """The records of the whole frame at ``pos`` of ``data``, and the position after it;
    (None, pos) when ``data`` ends inside that frame (or its header). Raises for a damaged
    frame: a length past the limit, a CRC mismatch, or contents that do not decode."""
    if pos + _HEADER.size > len(data):
        return None, pos
    length, crc = _HEADER.unpack_from(data, pos)
    if length > _MAX_FRAME:
        raise ValueError(f"a frame length of {length} bytes is past the limit")
    start = pos + _HEADER.size
    if start + length > len(data):
        return None, pos
    payload = data[start : start + length]
    if zlib.crc32(payload) != crc:
        raise ValueError("a frame's CRC does not match")
    return decode_frame(payload), start + length


def read_journal(path: Path) -> tuple[list[Record], bool]:
    """Every record of the whole frames of ``path``; True as second value when a torn
    or corrupt tail was cut off (the process died mid-write, or the file is damaged)."""
    data = Path(path).read_bytes()
    records: list[Record] = []
    pos = 0
    while pos < len(data):
        try:
            frame, pos = next_frame(data, pos)
        except Exception:  # noqa: BLE001 - a damaged frame ends the readable part
            return records, True
        if frame is None:  # the file ends inside a frame
            return records, True
        records.extend(frame)
    return records, False


def journal_bytes(directory: Path) -> int:
    """Bytes of the journal files on disk in ``directory``."""
    total = 0
    for p in journals_in(directory):
        try:
            total += p.stat().st_size
        except FileNotFoundError:  # deleted in between
            pass
    return total


# --- the live journal -------------------------------------------------------------------


class Journal:
    """The journal files a writer appends to. Not thread-safe by itself: the writer
    calls ``append`` and ``release`` under its own lock, so a frame's position in the
    journal and its records' place in the queue agree."""

    def __init__(self, directory: Path, rotate_bytes: int = 16 * 1024 * 1024, *,
                 reader_deletes: bool = False) -> None:
        """``reader_deletes``: another process reads the files and deletes them
        (:mod:`.journal_tail`), so sealed files are not kept here for ``release``."""
        self.dir = Path(directory)
        self.rotate_bytes = int(rotate_bytes)
        self._keep_sealed = not reader_deletes
        existing = journals_in(self.dir)
        if existing:  # recovered by the caller before this; never append to them
            raise FileExistsError(f"{self.dir} still holds journal files: {[p.name for p in existing]}")
        self._next = 1
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._sealed: deque[tuple[Path, int]] = deque()  # (file, last seq it holds)
        self.errors = 0
        self.last_error = ""
        self.bytes = 0  # on disk now, every file

    def append(self, frame: bytes, last_seq: int) -> bool:
        """Write one frame whose records end at accepted-sequence ``last_seq``; False
        when the write failed (counted; the records are still queued, just not
        crash-safe)."""
        view = memoryview(frame)
        try:
            fd = self._fd if self._fd is not None else self._open_next()
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if len(view) < len(frame):  # a partial frame ends its file; recovery cuts it
                self._size += len(frame) - len(view)
                self.bytes += len(frame) - len(view)
                self._seal(last_seq)
            return False
        self._size += len(frame)
        self.bytes += len(frame)
        if self._size >= self.rotate_bytes:
            self._seal(last_seq)
        return True

    def _open_next(self) -> int:
        path = self.dir / journal_name(self._next)
        fd = self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._path = path
        self._next += 1
        self._size = 0
        return fd

    def rotate(self, last_seq: int) -> bool:
        """Seal the active file, if it holds anything, and create its successor now, so
        a reader in another process (:mod:`.journal_tail`) knows the sealed one is
        complete without waiting for the next append. True if it rotated."""
        if self._fd is None or not self._size:
            return False
        self._seal(last_seq)
        try:
            self._open_next()
        except OSError as exc:  # the next append tries again, and counts a failure
            self.last_error = f"{type(exc).__name__}: {exc}"
        return True

    def _seal(self, last_seq: int) -> None:
        if self._fd is None or self._path is None:
            return
        os.close(self._fd)
        if self._keep_sealed:  # a file a second, all day, in a writer process's parent
            self._sealed.append((self._path, last_seq))
        self._fd, self._path = None, None

    def release(self, handled_seq: int, caught_up: bool) -> list[Path]:
        """Forget every sealed file whose records are all handled; with ``caught_up``
        (every accepted record handled) the active file is emptied too. Returns the
        files to unlink (outside the caller's lock)."""
        gone: list[Path] = []
        while self._sealed and self._sealed[0][1] <= handled_seq:
            gone.append(self._sealed.popleft()[0])
        if caught_up and self._fd is not None and self._size:
            try:
                os.ftruncate(self._fd, 0)
                self.bytes -= self._size
                self._size = 0
            except OSError as exc:  # pragma: no cover - truncating to 0 frees space
                self.last_error = f"{type(exc).__name__}: {exc}"
        return gone

    @staticmethod
    def unlink(paths: list[Path]) -> int:
        """Remove released files (safe outside the writer's lock); the bytes freed, for
        the caller to take off ``bytes`` under its lock."""
        freed = 0
        for p in paths:
            try:
                size = p.stat().st_size
                p.unlink()
            except FileNotFoundError:  # pragma: no cover
                continue
            freed += size
        return freed

    def close(self, *, delete: bool) -> None:
        """Close the active file; ``delete``: every record is handled, remove all."""
        if self._fd is not None:
            os.close(self._fd)
            if self._path is not None:
                self._sealed.append((self._path, -1))
            self._fd, self._path = None, None
        if delete:
            self.bytes -= self.unlink([p for p, _ in self._sealed])
            self._sealed.clear()


def recover_journals(directory: Path, spool_lines: SpoolAppend) -> tuple[int, int]:
    """Turn the journal files in ``directory`` (left by a dead writer) into spool
    records: each file's records are appended with fsync through ``spool_lines``, and
    only then is the file removed. Returns (records recovered, files with a torn tail).
    A file the spool refuses (over budget) is left for a later attempt."""
    from keyart.adapters.decision_log.records import record_to_json

    recovered = torn = 0
    for path in journals_in(directory):
        records, cut = read_journal(path)
        if cut:
            torn += 1
            log.warning("decision-log journal %s: a torn or corrupt tail was cut off", path.name)
        if records and not spool_lines([record_to_json(r) for r in records]):
            log.error("decision-log journal %s: the spool refused %d records; kept for later",
                      path.name, len(records))
            continue
        path.unlink()
        recovered += len(records)
    return recovered, torn



"""The on-disk spool of one writer: numbered JSON-lines segment files in one directory.

The writer spools here while the store is down (and when its queue overflows), then
replays from the head. Records are appended to the newest segment (a new one past
``segment_bytes``), read from the oldest without being consumed, and a segment is
deleted once fully consumed, so disk use follows the backlog. Appends that would take
the directory over ``max_bytes`` are refused: the caller decides what waits and what is
dropped. A torn tail (a crash mid-write) or a corrupt line is skipped and counted.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from keyart.adapters.decision_log.records import record_from_json
from keyart.adapters.decision_log.spool_dirs import (
    DEAD_LETTER_FILE,
    SEGMENT_PREFIX,
    SEGMENT_SUFFIX,
    fsync_dir,
    segment_name,
    segment_seq,
)
from keyart.domain import Impression, Outcome

log = logging.getLogger(__name__)

Record = Impression | Outcome


class SegmentSpool:
    """Append-only JSON-lines segments; read from the oldest, delete when consumed.

    Thread-safe: the writer thread appends, reads and consumes while request threads
    may append overflow (``blocking=False``). Segments already in ``directory`` (left by
    an earlier process) are picked up, in order, as the head of the spool.
    """

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.segment_bytes = int(segment_bytes)
        self.lock = threading.Lock()
        self.corrupt = 0
        found = sorted(self.dir.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"), key=segment_seq)
        self._segments: list[Path] = found
        self._sizes: dict[Path, int] = {p: p.stat().st_size for p in found}
        self._disk_bytes = sum(self._sizes.values())  # read lock-free by stats()
        self._next_seq = (segment_seq(found[-1]) + 1) if found else 1
        self._active_fd: int | None = None  # appends go to the newest segment we opened
        self._active: Path | None = None
        self._head_offset = 0
        self._dirty = False

    @property
    def disk_bytes(self) -> int:
        """Bytes of every segment on disk, consumed head included (the budget's measure)."""
        return self._disk_bytes

    @property
    def pending_bytes(self) -> int:
        """Bytes not yet consumed."""
        return max(0, self.disk_bytes - self._head_offset)

    def is_empty(self) -> bool:
        return self.pending_bytes == 0

    def _open_new_segment(self) -> None:
        if self._active_fd is not None:
            os.fsync(self._active_fd)
            os.close(self._active_fd)
        path = self.dir / segment_name(self._next_seq)
        self._next_seq += 1
        self._active_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._active = path
        self._segments.append(path)
        self._sizes[path] = 0

    def append(self, lines: Sequence[bytes], *, fsync: bool, blocking: bool = True) -> bool:
        """Append whole lines; False (nothing written) when over budget or, if not
        blocking, when the lock is busy."""
        data = b"".join(lines)
        if not data:
            return True
        if not self.lock.acquire(blocking=blocking):
            return False
        try:
            if self.disk_bytes + len(data) > self.max_bytes:
                return False
            if (
                self._active is None
                or self._active_fd is None
                or self._sizes[self._active] >= self.segment_bytes
            ):
                self._open_new_segment()
            assert self._active_fd is not None and self._active is not None
            view = memoryview(data)
            while view:
                n = os.write(self._active_fd, view)
                view = view[n:]
            self._sizes[self._active] += len(data)
            self._disk_bytes += len(data)
            # fsync a duplicate outside the lock: callers spooling on overflow only
            # try the lock, and another thread may rotate (close) the segment meanwhile.
            fd = os.dup(self._active_fd) if fsync else -1
            self._dirty = self._dirty or not fsync
        finally:
            self.lock.release()
        if fsync:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return True

    def sync(self) -> None:
        """fsync records appended without it (overflow from callers)."""
        if not self._dirty:
            return
        with self.lock:
            if self._active_fd is None:
                self._dirty = False
                return
            fd = os.dup(self._active_fd)
            self._dirty = False
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, max_records: int) -> tuple[list[Record], int]:
        """Up to max_records from the head, without consuming them; returns the records
        and the byte length to pass to ``consume``. Corrupt lines are skipped (counted)."""
        while True:
            with self.lock:
                if not self._segments:
                    return [], 0
                head = self._segments[0]
                size = self._sizes[head]
                active = head == self._active
            records: list[Record] = []
            length = 0
            with open(head, "rb") as fh:
                fh.seek(self._head_offset)
                while len(records) < max_records and self._head_offset + length < size:
                    line = fh.readline()
                    if not line:
                        break
                    if not line.endswith(b"\n"):
                        if active:
                            break  # being written; read it next time
                        length += len(line)  # torn write from a crash
                        self.corrupt += 1
                        log.error("decision-log spool: torn record skipped in %s", head.name)
                        break
                    length += len(line)
                    try:
                        records.append(record_from_json(line))
                    except Exception:  # noqa: BLE001 - corrupt line, keep going
                        self.corrupt += 1
                        log.error("decision-log spool: corrupt record skipped in %s", head.name)
            if records or length:
                return records, length
            # Nothing readable in the head segment: drop it if it is finished.
            with self.lock:
                if (
                    self._segments
                    and self._segments[0] == head
                    and head != self._active
                    and self._head_offset >= self._sizes[head]
                ):
                    self._drop_head()
                    continue
            return [], 0

    def consume(self, length: int) -> None:
        """Mark ``length`` bytes returned by ``read`` as stored; finished segments go."""
        with self.lock:
            head = self._segments[0]
            if self._head_offset + length < self._sizes[head]:
                self._head_offset += length
                return
            if head == self._active:
                # Caught up with the writer: start over with an empty segment.
                assert self._active_fd is not None
                os.close(self._active_fd)
                self._active_fd, self._active = None, None
            self._drop_head()

    def _drop_head(self) -> None:
        # The file goes before its bytes leave the count: whoever reads (lock-free) that
        # nothing is pending also finds no finished segment left on disk.
        head = self._segments.pop(0)
        try:
            head.unlink()
        except FileNotFoundError:  # pragma: no cover
            pass
        self._disk_bytes -= self._sizes.pop(head, 0)
        self._head_offset = 0

    def adopt(self, segments: Sequence[Path]) -> int:
        """Move other segment files (in order) to the tail of this spool by renaming
        them (same file system). New appends go to a fresh segment behind them.
        Returns the bytes adopted."""
        adopted = 0
        with self.lock:
            if self._active_fd is not None:
                os.fsync(self._active_fd)
                os.close(self._active_fd)
                self._active_fd, self._active = None, None
            for src in segments:
                try:
                    size = src.stat().st_size
                except FileNotFoundError:
                    continue
                if size == 0:
                    src.unlink(missing_ok=True)
                    continue
                dest = self.dir / segment_name(self._next_seq)
                try:
                    os.rename(src, dest)
                except FileNotFoundError:
                    continue
                self._next_seq += 1
                self._segments.append(dest)
                self._sizes[dest] = size
                self._disk_bytes += size
                adopted += size
        if adopted:
            fsync_dir(self.dir)
        return adopted

    def dead_letter(self, lines: Sequence[bytes]) -> None:
        """Append (and fsync) records the store keeps rejecting to ``DEAD_LETTER_FILE``,
        kept for a human; they do not count against the budget."""
        with open(self.dir / DEAD_LETTER_FILE, "ab") as fh:
            fh.write(b"".join(lines))
            fh.flush()
            os.fsync(fh.fileno())

    def close(self) -> None:
        """fsync and close the segment being appended to (appends reopen one)."""
        with self.lock:
            if self._active_fd is not None:
                os.fsync(self._active_fd)
                os.close(self._active_fd)
                self._active_fd, self._active = None, None


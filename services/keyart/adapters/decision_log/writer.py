"""Asynchronous, loss-accounted writer in front of a LogStore.

Request threads call ``submit_impressions`` / ``submit_outcomes``; these never block on
I/O: records go into a bounded in-memory queue (counted in records, not calls). One
background thread drains the queue in batches of up to ``batch_size`` records
(waiting at most ``flush_interval_s`` to fill a batch) and writes them to the store.

Failure handling, so that nothing is lost silently:

* the store raises (LogStoreUnavailable or anything else): the batch is appended to an
  on-disk spool (JSON lines in numbered segment files under ``spool_dir``, fsync'd per
  batch). While the spool holds anything, new batches are appended behind it, so the
  store receives records in submission order.
* the spool is full (``spool_max_bytes``): records stay in the memory queue until
  there is room; they are only dropped at submit time (below).
* the writer pings the store every ``retry_interval_s`` (doubling up to
  ``max_retry_interval_s``; ``flush()`` pings at once); once the ping succeeds the
  spool is replayed in order, a batch at a time, then deleted segment by segment.
  A spool left by a previous process is replayed the same way at start-up.
* a batch that keeps failing with a non-availability error while the store answers
  pings is split and the records that still fail go to ``dead-letter.jsonl`` in the
  spool directory (counted in ``dead_lettered``), so one bad record cannot wedge the log;
  if every record of the batch fails, the store is treated as down instead.
* the queue is full: the caller appends the records to the spool itself, but only if
  the spool lock is free right away and the spool is under budget (a buffered write, no
  fsync; the writer thread fsyncs it shortly after). Such overflow records may be
  stored ahead of older records still in the queue (writes are idempotent upserts, so
  only the order, not the content, is affected).
* queue full and spool full (or busy): the records are counted in ``dropped``, an ERROR
  is logged (at most once a second, with totals) and ``health()`` reports unhealthy
  for ``drop_alarm_s`` after the last drop.

Several processes on one machine (Ray Serve replicas) share one spool root
(``settings.log_dir / "spool"``). With ``shared_spool=True`` (what
:func:`keyart.adapters.decision_log.factory.open_decision_log` uses) ``spool_dir`` is that root
and each writer spools in its own subdirectory ``<hostname>-<pid>-<random>``, holding
an exclusive ``fcntl.flock`` on ``<subdir>/.lock`` for its lifetime (the kernel
releases it when the process dies, however it dies). The subdirectory is made under a
``.new-`` name, locked, then renamed, so no other writer ever sees it unlocked.

At start and every ``adopt_interval_s`` (30 s) a writer *adopts* orphaned sibling
directories, those whose lock it can take (their owner is dead): their segments are
renamed, in order, to the tail of its own spool (same file system: no copy, no
extra disk) and replayed into the store like its own records; dead-letter files move
along; then the orphan's lock file and directory are removed. An adopter that dies
half way leaves the rest in the orphan (adopted again later) and what it took in its
own directory (an orphan in turn): nothing is lost, and a record replayed twice is
harmless (impressions are upserts, outcomes are deduplicated by key). Two live
writers never read, write or delete each other's spool. Adopted bytes count against
the adopter's ``spool_max_bytes``: over budget, its new records wait in memory until
the replay makes room. A closing writer removes its directory when it is empty and
otherwise leaves it (unlocked) for a sibling or the next process.

Segments written directly in the root by the single-directory layout (older
versions) are adopted too, once untouched for ``legacy_grace_s`` (an older process
may still be appending to them). Outside that grace nothing in the root is touched.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from keyart.adapters.decision_log.records import record_from_json, record_to_json
from keyart.adapters.decision_log.store import LogStore, LogStoreUnavailable, OutcomeWriteResult
from keyart.domain import Impression, Outcome

log = logging.getLogger(__name__)

Record = Impression | Outcome

_SEGMENT_PREFIX = "spool-"
_SEGMENT_SUFFIX = ".jsonl"
DEAD_LETTER_FILE = "dead-letter.jsonl"
LOCK_FILE = ".lock"
_NEW_PREFIX = ".new-"
_LEGACY_LOCK = ".legacy.lock"


# --- per-process spool directories -----------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # pragma: no cover - best effort
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _try_lock(path: Path, create: bool = True) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if another process (or
    another open file in this process) holds it, or it cannot be opened."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _seq_of_name(path: Path) -> int:
    try:
        return int(path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)])
    except ValueError:
        return -1


def _segments_in(directory: Path) -> list[Path]:
    found = [p for p in directory.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}") if p.is_file()]
    return sorted((p for p in found if _seq_of_name(p) >= 0), key=_seq_of_name)


def claim_spool_dir(root: Path) -> tuple[Path, int]:
    """Create and lock this process's own spool directory under ``root``.

    Returns (directory, fd holding the flock on its lock file); closing the fd (or the
    process dying) releases the claim.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40]
    for _ in range(10):
        name = f"{host or 'host'}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp = root / f"{_NEW_PREFIX}{name}"
        try:
            tmp.mkdir()
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue
        fd = _try_lock(tmp / LOCK_FILE)
        if fd is None:  # pragma: no cover - a cleaner removed it in between: retry
            continue
        os.write(fd, f"pid={os.getpid()} host={socket.gethostname()} at={time.time():.0f}\n".encode())
        final = root / name
        try:
            os.rename(tmp, final)
        except OSError:  # pragma: no cover
            os.close(fd)
            continue
        _fsync_dir(root)
        return final, fd
    raise OSError(f"cannot create a spool directory under {root}")  # pragma: no cover


def spool_status(root: Path) -> list[dict[str, object]]:
    """Every per-process spool directory under ``root``: name, whether its owner is
    alive (its lock is held), pending bytes and segment count. Probing an orphan takes
    its lock for an instant (a writer adopting then simply retries later)."""
    out: list[dict[str, object]] = []
    root = Path(root)
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith("."):
            continue
        fd = _try_lock(d / LOCK_FILE, create=False) if (d / LOCK_FILE).exists() else None
        alive = fd is None and (d / LOCK_FILE).exists()
        if fd is not None:
            os.close(fd)
        segs = _segments_in(d)
        out.append(
            {
                "dir": d.name,
                "alive": alive,
                "segments": len(segs),
                "bytes": sum(p.stat().st_size for p in segs if p.exists()),
                "dead_letters": sum(1 for _ in d.glob("dead-letter*.jsonl")),
            }
        )
    legacy = _segments_in(root)
    if legacy:
        out.append(
            {
                "dir": ".",
                "alive": False,
                "segments": len(legacy),
                "bytes": sum(p.stat().st_size for p in legacy if p.exists()),
                "dead_letters": 0,
            }
        )
    return out


# --- spool ------------------------------------------------------------------------------


class _Spool:
    """Append-only JSON-lines segments; read from the oldest, delete when consumed."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.segment_bytes = int(segment_bytes)
        self.lock = threading.Lock()
        self.corrupt = 0
        found = sorted(self.dir.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}"), key=self._seq_of)
        self._segments: list[Path] = found
        self._sizes: dict[Path, int] = {p: p.stat().st_size for p in found}
        self._disk_bytes = sum(self._sizes.values())  # read lock-free by stats()
        self._next_seq = (self._seq_of(found[-1]) + 1) if found else 1
        self._active_fd: int | None = None  # appends go to the newest segment we opened
        self._active: Path | None = None
        self._head_offset = 0
        self._dirty = False

    @staticmethod
    def _seq_of(path: Path) -> int:
        return int(path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)])

    @property
    def disk_bytes(self) -> int:
        return self._disk_bytes

    @property
    def pending_bytes(self) -> int:
        return max(0, self.disk_bytes - self._head_offset)

    def is_empty(self) -> bool:
        return self.pending_bytes == 0

    def _open_new_segment(self) -> None:
        if self._active_fd is not None:
            os.fsync(self._active_fd)
            os.close(self._active_fd)
        path = self.dir / f"{_SEGMENT_PREFIX}{self._next_seq:010d}{_SEGMENT_SUFFIX}"
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
        with self.lock:
            self._head_offset += length
            head = self._segments[0]
            if self._head_offset >= self._sizes[head]:
                if head == self._active:
                    # Caught up with the writer: start over with an empty segment.
                    assert self._active_fd is not None
                    os.close(self._active_fd)
                    self._active_fd, self._active = None, None
                self._drop_head()

    def _drop_head(self) -> None:
        head = self._segments.pop(0)
        self._disk_bytes -= self._sizes.pop(head, 0)
        self._head_offset = 0
        try:
            head.unlink()
        except FileNotFoundError:  # pragma: no cover
            pass

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
                dest = self.dir / f"{_SEGMENT_PREFIX}{self._next_seq:010d}{_SEGMENT_SUFFIX}"
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
            _fsync_dir(self.dir)
        return adopted

    def has_files(self) -> bool:
        """Anything at all in the directory besides the lock file."""
        return any(p.name != LOCK_FILE for p in self.dir.iterdir())

    def close(self) -> None:
        with self.lock:
            if self._active_fd is not None:
                os.fsync(self._active_fd)
                os.close(self._active_fd)
                self._active_fd, self._active = None, None


# --- writer -----------------------------------------------------------------------------


@dataclass
class _Counters:
    submitted: int = 0
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: int = 0
    overflow_spooled: int = 0
    dead_lettered: int = 0
    store_errors: int = 0
    outcomes_duplicate: int = 0
    outcomes_unknown_decision: int = 0
    adopted_spools: int = 0
    adopted_bytes: int = 0


class DecisionLogWriter:
    """Non-blocking front of a LogStore with an on-disk spool for outages."""

    def __init__(
        self,
        store: LogStore,
        spool_dir: Path,
        queue_size: int,
        batch_size: int,
        spool_max_bytes: int,
        flush_interval_s: float = 0.2,
        *,
        retry_interval_s: float = 1.0,
        max_retry_interval_s: float = 30.0,
        segment_bytes: int = 64 * 1024 * 1024,
        drop_alarm_s: float = 300.0,
        close_store: bool = True,
        start: bool = True,
        shared_spool: bool = False,
        adopt_interval_s: float = 30.0,
        legacy_grace_s: float = 60.0,
    ) -> None:
        """``shared_spool``: ``spool_dir`` is a root shared by several processes; this
        writer spools in its own locked subdirectory and adopts orphaned siblings (see
        the module docstring). Otherwise ``spool_dir`` is this writer's alone."""
        if queue_size <= 0 or batch_size <= 0:
            raise ValueError("queue_size and batch_size must be positive")
        self.store = store
        self.queue_size = int(queue_size)
        self.batch_size = int(batch_size)
        self.flush_interval_s = float(flush_interval_s)
        self.retry_interval_s = float(retry_interval_s)
        self.max_retry_interval_s = float(max_retry_interval_s)
        self.drop_alarm_s = float(drop_alarm_s)
        self._close_store = close_store
        self.adopt_interval_s = float(adopt_interval_s)
        self.legacy_grace_s = float(legacy_grace_s)
        self._root: Path | None = None
        self._claim_fd: int | None = None
        if shared_spool:
            self._root = Path(spool_dir)
            own_dir, self._claim_fd = claim_spool_dir(self._root)
            self._spool = _Spool(own_dir, spool_max_bytes, segment_bytes)
        else:
            self._spool = _Spool(Path(spool_dir), spool_max_bytes, segment_bytes)
        self.spool_dir = self._spool.dir
        self._next_adopt = time.monotonic() + self.adopt_interval_s

        self._cond = threading.Condition()
        self._chunks: deque[list[Record]] = deque()  # each chunk: records of one submit
        self._depth = 0
        self._accepted_seq = 0  # records accepted into the queue, ever
        self._handled_seq = 0  # of those, taken and written / spooled / dead-lettered
        self._flush_waiters = 0
        self._close_deadline = float("inf")
        self._spool_chunk = max(self.batch_size, 10_000)  # records per spool append
        self._ping_epoch = 0  # ping attempts made by the writer thread
        self._closing = False
        self._c = _Counters()
        self._stats_lock = threading.Lock()
        if self._root is not None:
            self.adopt_orphans()

        self._store_up = self._spool.is_empty()
        self._next_ping = 0.0
        self._backoff = self.retry_interval_s
        self._last_error = ""
        self._last_drop_log = 0.0
        self._last_drop_time: float | None = None
        self._replay_failures = 0
        if not self._spool.is_empty():
            log.warning(
                "decision-log spool holds %d bytes from a previous run; replaying first",
                self._spool.pending_bytes,
            )
        self._thread = threading.Thread(target=self._run, name="decision-log-writer", daemon=True)
        if start:
            self._thread.start()

    # --- producer side ----------------------------------------------------------------

    def submit_impressions(self, impressions: list[Impression]) -> bool:
        """Queue impressions; True when all were accepted (queued or spooled)."""
        return self._submit(list(impressions))

    def submit_outcomes(self, outcomes: list[Outcome]) -> bool:
        """Queue outcomes; True when all were accepted (queued or spooled)."""
        return self._submit(list(outcomes))

    def _submit(self, records: list[Record]) -> bool:
        if not records:
            return True
        with self._cond:
            if self._closing:
                overflow = records
                queued = 0
            else:
                room = self.queue_size - self._depth
                queued = min(room, len(records))
                if queued > 0:
                    self._chunks.append(records[:queued])
                    self._depth += queued
                    self._accepted_seq += queued
                    if self._depth >= self.batch_size:
                        self._cond.notify_all()
                overflow = records[queued:]
        with self._stats_lock:
            self._c.submitted += len(records)
        if not overflow:
            return True
        return self._overflow(overflow)

    def _overflow(self, records: list[Record]) -> bool:
        """Queue full (or closing): spool on the caller's thread if that is cheap now."""
        try:
            lines = [record_to_json(r) for r in records]
            if self._closing:
                # Submitted during or after close: make it durable for the next run.
                if self._root is not None:  # the (released) directory may be gone
                    self._spool.dir.mkdir(parents=True, exist_ok=True)
                ok = self._spool.append(lines, fsync=True, blocking=True)
                if ok and not self._thread.is_alive():
                    self._spool.close()
            else:
                ok = self._spool.append(lines, fsync=False, blocking=False)
        except OSError as exc:
            ok = False
            self._last_error = f"spool write failed: {exc}"
        with self._stats_lock:
            if ok:
                self._c.spooled += len(records)
                self._c.overflow_spooled += len(records)
            else:
                self._c.dropped += len(records)
        if ok:
            with self._cond:
                self._cond.notify_all()  # the writer fsyncs and switches to spool mode
            return True
        self._note_drop(len(records))
        return False

    def _note_drop(self, n: int) -> None:
        now = time.monotonic()
        self._last_drop_time = now
        if now - self._last_drop_log >= 1.0:
            self._last_drop_log = now
            with self._stats_lock:
                total = self._c.dropped
            log.error(
                "DECISION LOG DROPPING RECORDS: queue full (%d) and spool full or busy "
                "(%d/%d bytes); dropped %d now, %d in total",
                self.queue_size,
                self._spool.disk_bytes,
                self._spool.max_bytes,
                n,
                total,
            )

    # --- control ----------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record queued before the call is durable: in the store, or,
        while the store is down, in the fsync'd spool. If the store was believed down,
        it is pinged once now (not at the next back-off tick), and if it answers the
        spool is replayed before this returns. Returns False on timeout.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._accepted_seq
            ping_target = self._ping_epoch + 1 if not self._spool.is_empty() else 0
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                while not self._flushed(target, ping_target):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._thread.is_alive():
                        return self._flushed(target, ping_target)
                    self._cond.wait(min(remaining, 0.05))
                return True
            finally:
                self._flush_waiters -= 1

    def _flushed(self, target: int, ping_target: int) -> bool:
        if self._handled_seq < target:
            return False
        if self._spool.is_empty():
            return True
        return not self._store_up and self._ping_epoch >= ping_target

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop accepting, write out the queue (to the store or the spool), then stop.

        If the store is up, a non-empty spool is replayed until ``timeout_s``; what is
        left stays on disk and is replayed by the next process.
        """
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._close_deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s + 1.0)
        elif self._thread.ident is None:  # never started: drain on this thread
            self._run()
        if self._thread.is_alive():
            log.error("decision-log writer did not stop within %.1fs", timeout_s)
        self._spool.close()
        self._release_claim()
        if self._close_store:
            try:
                self.store.close()
            except Exception:
                log.exception("error closing the decision log store")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- observability ----------------------------------------------------------------

    def stats(self) -> dict[str, int | bool]:
        with self._stats_lock:
            c = self._c
            out: dict[str, int | bool] = {
                "submitted": c.submitted,
                "written": c.written,
                "spooled": c.spooled,
                "replayed": c.replayed,
                "dropped": c.dropped,
                "overflow_spooled": c.overflow_spooled,
                "dead_lettered": c.dead_lettered,
                "store_errors": c.store_errors,
                "outcomes_duplicate": c.outcomes_duplicate,
                "outcomes_unknown_decision": c.outcomes_unknown_decision,
                "adopted_spools": c.adopted_spools,
                "adopted_bytes": c.adopted_bytes,
            }
        out["queue_depth"] = self._depth
        out["spool_bytes"] = self._spool.pending_bytes
        out["spool_corrupt"] = self._spool.corrupt
        out["store_up"] = self._store_up
        return out

    def health(self) -> tuple[bool, str]:
        """(healthy, message). Unhealthy: the writer thread died, records were dropped
        within ``drop_alarm_s``, or the spool is over 90% of its budget."""
        s = self.stats()
        problems: list[str] = []
        if not self._thread.is_alive() and not self._closing:
            problems.append("writer thread is not running")
        recent_drop = (
            self._last_drop_time is not None
            and time.monotonic() - self._last_drop_time < self.drop_alarm_s
        )
        if recent_drop:
            problems.append(f"dropped {s['dropped']} records (queue and spool full)")
        if self._spool.disk_bytes > 0.9 * self._spool.max_bytes:
            problems.append(
                f"spool nearly full ({self._spool.disk_bytes}/{self._spool.max_bytes} bytes)"
            )
        if problems:
            return False, "; ".join(problems)
        if not self._store_up:
            return True, (
                f"store unavailable, spooling to disk ({s['spool_bytes']} bytes): "
                f"{self._last_error}"
            )
        if s["spool_bytes"]:
            return True, f"replaying spool ({s['spool_bytes']} bytes)"
        return True, f"ok (written {s['written']}, replayed {s['replayed']})"

    # --- shared spool root ------------------------------------------------------------

    def adopt_orphans(self) -> int:
        """Adopt every orphaned sibling spool (lock free: its owner died). Returns the
        number of directories adopted. Runs at start and every ``adopt_interval_s``."""
        root = self._root
        if root is None or not root.is_dir():
            return 0
        adopted = 0
        for d in sorted(root.iterdir()):
            if not d.is_dir() or d == self._spool.dir:
                continue
            if d.name.startswith(_NEW_PREFIX):
                self._remove_stale_new(d)
                continue
            if d.name.startswith("."):
                continue
            fd = _try_lock(d / LOCK_FILE)
            if fd is None:
                continue  # its writer is alive
            try:
                if self._adopt_dir(d):
                    adopted += 1
            finally:
                os.close(fd)
        self._adopt_legacy(root)
        return adopted

    def _adopt_dir(self, d: Path) -> bool:
        segments = _segments_in(d)
        nbytes = self._spool.adopt(segments)
        for i, dl in enumerate(sorted(d.glob("dead-letter*.jsonl"))):
            dest = self._spool.dir / f"dead-letter-{d.name}-{i}.jsonl"
            os.rename(dl, dest)
        _fsync_dir(self._spool.dir)
        leftovers = [p for p in d.iterdir() if p.name != LOCK_FILE]
        if leftovers:
            log.warning(
                "decision-log spool %s: left unknown files %s", d, [p.name for p in leftovers]
            )
        else:
            (d / LOCK_FILE).unlink(missing_ok=True)
            try:
                d.rmdir()
            except OSError:  # another adopter re-created its lock file meanwhile
                pass
            _fsync_dir(d.parent)
        if segments:
            log.warning(
                "decision-log: adopted orphaned spool %s (%d segments, %d bytes); replaying",
                d.name, len(segments), nbytes,
            )
            with self._stats_lock:
                self._c.adopted_spools += 1
                self._c.adopted_bytes += nbytes
            with self._cond:
                self._cond.notify_all()
        return bool(segments)

    def _remove_stale_new(self, d: Path) -> None:
        """A ``.new-`` directory left by a process that died while creating it."""
        try:
            if time.time() - d.stat().st_mtime < 60.0:
                return
        except FileNotFoundError:
            return
        fd = _try_lock(d / LOCK_FILE, create=False)
        if fd is None:
            return
        try:
            if not _segments_in(d):
                for p in d.iterdir():
                    p.unlink(missing_ok=True)
                d.rmdir()
        except OSError:  # pragma: no cover
            pass
        finally:
            os.close(fd)

    def _adopt_legacy(self, root: Path) -> None:
        """Segments of the single-directory layout, directly in the root."""
        legacy = _segments_in(root)
        if not legacy:
            return
        now = time.time()
        fd = _try_lock(root / _LEGACY_LOCK)
        if fd is None:
            return
        try:
            take: list[Path] = []
            for p in _segments_in(root):  # again, under the lock
                try:
                    if now - p.stat().st_mtime < self.legacy_grace_s:
                        break  # keep order: stop at the first one still in use
                except FileNotFoundError:
                    continue
                take.append(p)
            if take:
                nbytes = self._spool.adopt(take)
                log.warning("decision-log: adopted %d legacy spool segments (%d bytes)",
                            len(take), nbytes)
                with self._stats_lock:
                    self._c.adopted_spools += 1
                    self._c.adopted_bytes += nbytes
        finally:
            os.close(fd)

    def _release_claim(self) -> None:
        """Give up this writer's spool directory: removed when empty, else left for
        adoption."""
        fd, self._claim_fd = self._claim_fd, None
        if fd is None:
            return
        try:
            if not self._spool.has_files():
                (self._spool.dir / LOCK_FILE).unlink(missing_ok=True)
                try:
                    self._spool.dir.rmdir()
                except OSError:
                    pass
        except OSError:  # pragma: no cover - best effort
            log.exception("decision-log: cannot clean the spool directory")
        finally:
            os.close(fd)

    # --- consumer side ----------------------------------------------------------------

    def _take(self, wait: bool, limit: int | None = None) -> list[Record]:
        """Up to ``limit`` (default batch_size) records from the queue, waiting up to
        flush_interval_s to fill a batch if asked."""
        limit = limit or self.batch_size
        with self._cond:
            if wait:
                deadline = time.monotonic() + self.flush_interval_s
                while (
                    self._depth < self.batch_size and not self._closing and not self._flush_waiters
                ):
                    if self._depth == 0 and not self._spool.is_empty():
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            batch: list[Record] = []
            while self._chunks and len(batch) < limit:
                chunk = self._chunks[0]
                need = limit - len(batch)
                if len(chunk) <= need:
                    batch.extend(self._chunks.popleft())
                else:
                    batch.extend(chunk[:need])
                    self._chunks[0] = chunk[need:]
            self._depth -= len(batch)
            return batch

    def _handled(self, n: int) -> None:
        if n:
            with self._cond:
                self._handled_seq += n
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            try:
                if self._step():
                    return
            except Exception:
                log.exception("decision-log writer loop error")
                time.sleep(0.05)

    def _step(self) -> bool:
        """One iteration; True when the writer should exit."""
        self._spool.sync()
        closing = self._closing
        if self._root is not None and not closing and time.monotonic() >= self._next_adopt:
            self._next_adopt = time.monotonic() + self.adopt_interval_s
            try:
                self.adopt_orphans()
            except Exception:
                log.exception("decision-log spool adoption failed")
        if not self._spool.is_empty():
            # Spool mode: keep order by appending new records behind the spool. When
            # the spool is full the records stay in the queue (dropping only happens
            # at submit, when the queue is full too).
            # Large appends: one fsync covers many batches.
            blocked = False
            batch = self._take(wait=False, limit=self._spool_chunk)
            while batch:
                n = self._spool_or_keep(batch)
                self._handled(n)
                if n == 0:
                    blocked = True
                    break
                batch = self._take(wait=False, limit=self._spool_chunk)
            progressed = False
            if self._maybe_ping():
                progressed = self._replay(max_batches=8)
            if closing:
                if not self._store_up or time.monotonic() >= self._close_deadline:
                    return self._finish_closing()
                return False  # keep replaying, then drain the queue directly
            if not progressed and not self._spool.is_empty():
                with self._cond:
                    if (blocked or not self._depth) and not self._closing:
                        self._cond.wait(
                            0.01
                            if self._store_up
                            else max(0.001, min(self._next_ping - time.monotonic(), 0.2))
                        )
            return False

        batch = self._take(wait=not closing)
        if batch:
            self._handled(self._write_direct(batch))
            return False
        if closing:
            return self._finish_closing()
        return False

    def _finish_closing(self) -> bool:
        # Anything still queued (store down or deadline hit) goes to the spool; what
        # does not fit is dropped, loudly: the process is going away.
        batch = self._take(wait=False)
        while batch:
            if not self._spool_records(batch):
                self._drop(batch)
            self._handled(len(batch))
            batch = self._take(wait=False)
        self._spool.sync()
        if not self._spool.is_empty():
            log.warning(
                "decision-log writer closing with %d spooled bytes not yet in the store",
                self._spool.pending_bytes,
            )
        return True

    def _write_direct(self, batch: list[Record]) -> int:
        """Write to the store; on failure spool the rest. Returns records handled
        (the rest were put back at the head of the queue because the spool is full)."""
        done = 0
        try:
            for run in _runs(batch):
                self._write_run(run)
                done += len(run)
                with self._stats_lock:
                    self._c.written += len(run)
        except Exception as exc:  # noqa: BLE001 - spool on any store error
            self._store_failed(exc)
            done += self._spool_or_keep(batch[done:])
        return done

    def _spool_or_keep(self, records: list[Record]) -> int:
        """Spool records; if the spool is full put them back at the head of the queue
        (returns 0), unless they could never fit, then drop them (loudly)."""
        if not records:
            return 0
        if self._spool_records(records):
            return len(records)
        if self._spool.is_empty():
            self._drop(records)  # larger than the whole spool budget
            return len(records)
        with self._cond:
            self._chunks.appendleft(list(records))
            self._depth += len(records)
        return 0

    def _drop(self, records: list[Record]) -> None:
        with self._stats_lock:
            self._c.dropped += len(records)
        self._note_drop(len(records))

    def _write_run(self, run: list[Record]) -> None:
        if isinstance(run[0], Impression):
            self.store.write_impressions(run)  # type: ignore[arg-type]
        else:
            result: OutcomeWriteResult = self.store.write_outcomes(run)  # type: ignore[arg-type]
            with self._stats_lock:
                self._c.outcomes_duplicate += result.duplicates
                self._c.outcomes_unknown_decision += result.unknown_decision

    def _spool_records(self, records: list[Record]) -> bool:
        """Append and fsync; False (nothing written) when over budget or on I/O error."""
        if not records:
            return True
        try:
            ok = self._spool.append([record_to_json(r) for r in records], fsync=True)
        except OSError as exc:
            ok = False
            self._last_error = f"spool write failed: {exc}"
            log.error("decision-log spool write failed: %s", exc)
        if ok:
            with self._stats_lock:
                self._c.spooled += len(records)
        return ok

    def _store_failed(self, exc: BaseException) -> None:
        with self._stats_lock:
            self._c.store_errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self._store_up:
            if isinstance(exc, LogStoreUnavailable):
                log.warning("decision log store unavailable, spooling: %s", exc)
            else:
                log.error("decision log store write failed, spooling: %r", exc)
        self._store_up = False
        self._next_ping = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.max_retry_interval_s)

    def _maybe_ping(self) -> bool:
        if self._store_up:
            return True
        if time.monotonic() < self._next_ping and not self._closing and not self._flush_waiters:
            return False
        try:
            self.store.ping()
        except Exception as exc:  # noqa: BLE001
            self._store_failed(exc)
            self._pinged()
            return False
        self._pinged()
        log.info(
            "decision log store is back; replaying %d spooled bytes", self._spool.pending_bytes
        )
        self._store_up = True
        self._backoff = self.retry_interval_s
        return True

    def _pinged(self) -> None:
        with self._cond:
            self._ping_epoch += 1
            self._cond.notify_all()

    def _replay(self, max_batches: int) -> bool:
        """Replay up to max_batches from the spool head; True if anything moved."""
        progressed = False
        for _ in range(max_batches):
            records, length = self._spool.read(self.batch_size)
            if not length:
                break
            try:
                for run in _runs(records):
                    self._write_run(run)
            except LogStoreUnavailable as exc:
                self._store_failed(exc)
                break
            except Exception as exc:  # noqa: BLE001
                self._replay_failures += 1
                if self._replay_failures < 3:
                    self._store_failed(exc)
                    break
                try:
                    self._replay_one_by_one(records)
                except LogStoreUnavailable as exc2:
                    self._store_failed(exc2)
                    break
            self._replay_failures = 0
            with self._stats_lock:
                self._c.replayed += len(records)
            self._spool.consume(length)
            progressed = True
            if self._spool.is_empty():
                log.info("decision-log spool replayed completely")
        if progressed:
            with self._cond:
                self._cond.notify_all()
        return progressed

    def _replay_one_by_one(self, records: list[Record]) -> None:
        """A batch that keeps failing for a reason other than availability: write its
        records one at a time and move those that fail into the dead-letter file, but
        only when the failure is specific to them (some other record of the batch
        went through). If every record fails, the store is treated as down instead."""
        bad: list[tuple[Record, Exception]] = []
        for rec in records:
            try:
                self._write_run([rec])
            except LogStoreUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001
                bad.append((rec, exc))
        if bad and len(bad) == len(records):
            raise LogStoreUnavailable(
                f"store rejects every record of the batch: {bad[-1][1]!r}"
            ) from bad[-1][1]
        for rec, err in bad:
            log.error("decision-log record dead-lettered: %r (%s)", err, rec)
        if bad:
            path = self._spool.dir / DEAD_LETTER_FILE
            with open(path, "ab") as fh:
                fh.write(b"".join(record_to_json(r) for r, _ in bad))
                fh.flush()
                os.fsync(fh.fileno())
            with self._stats_lock:
                self._c.dead_lettered += len(bad)
                self._c.replayed -= len(bad)


def _runs(records: Iterable[Record]) -> list[list[Record]]:
    """Split into consecutive runs of one record type, keeping order."""
    runs: list[list[Record]] = []
    for rec in records:
        if runs and type(runs[-1][0]) is type(rec):
            runs[-1].append(rec)
        else:
            runs.append([rec])
    return runs

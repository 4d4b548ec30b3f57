"""The decision log's front door: request threads hand records over without ever blocking
on I/O, and nothing is lost silently (store down: spool to disk; full: count and alarm).

This module is the queue/thread/retry state machine, :class:`DecisionLogWriter`, tuned by
:class:`WriterConfig`. The files it falls back on are :mod:`.spool` (one directory of
segments) and :mod:`.spool_dirs` (per-process directories under a shared root).

Why this module is longer than ~450 lines: it is one state machine (queue, batching,
store retries with back-off, spooling, replay, dead-lettering, flush and close) whose
states share one lock and one condition variable. Cutting it further would spread
that shared state over modules and make its invariants harder to read, not easier.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

from keyart.adapters.decision_log.journal import Journal, encode_frame, recover_journals
from keyart.adapters.decision_log.records import record_to_json
from keyart.adapters.decision_log.spool import Record, SegmentSpool
from keyart.adapters.decision_log.spool_dirs import adopt_orphans, claim_spool_dir, release_spool_dir
from keyart.adapters.decision_log.store import (
    MAX_OUTCOMES_PER_UNKNOWN_DECISION,
    LogStore,
    LogStoreUnavailable,
    OutcomeWriteResult,
)
from keyart.core.log_limit import LimitedLog
from keyart.domain import Impression, LoggedPage, Outcome

if TYPE_CHECKING:
    from keyart.core.ports import DecisionLog

log = logging.getLogger(__name__)
WRITER_THREAD_NAME = "decision-log-writer"  # the thread that writes the store (benches read its CPU clock)
limited = LimitedLog(log)  # one line per reason per 10 s


@dataclass(frozen=True)
class WriterConfig:
    """Tuning of a DecisionLogWriter. The defaults of the first three are those of
    KeyartSettings (``log_queue_size``, ``log_batch_size``, ``log_spool_max_bytes``)."""

    queue_size: int = 100_000
    """Records held in memory; past it, submits spool on the caller's thread or drop."""
    batch_size: int = 2_000
    """Records per store write (and per spool replay step)."""
    spool_max_bytes: int = 1_000_000_000
    """Disk budget of the spool, adopted orphans included."""
    flush_interval_s: float = 0.2
    """Longest wait to fill a batch before writing a partial one."""
    retry_interval_s: float = 1.0
    """First wait before pinging a store that failed."""
    max_retry_interval_s: float = 30.0
    """Cap of the doubling ping back-off."""
    segment_bytes: int = 64 * 1024 * 1024
    """Size past which the spool starts a new segment file."""
    drop_alarm_s: float = 300.0
    """How long ``health()`` stays unhealthy after records were dropped."""
    adopt_interval_s: float = 30.0
    """Period of the orphan adoption pass (``shared_spool`` only)."""
    journal: bool = True
    """Append every submit to a write-ahead journal before it returns (:mod:`.journal`),
    so a killed process loses no acknowledged record."""
    journal_rotate_bytes: int = 16 * 1024 * 1024
    """Size past which the journal starts a new file (old ones go once handled)."""

    def __post_init__(self) -> None:
        if self.queue_size <= 0 or self.batch_size <= 0:
            raise ValueError("queue_size and batch_size must be positive")


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
    outcomes_refused: int = 0
    adopted_spools: int = 0
    adopted_bytes: int = 0
    journal_errors: int = 0
    journal_recovered: int = 0
    journal_torn: int = 0


class DecisionLogWriter:
    """Non-blocking front of a LogStore with an on-disk spool for outages.

    ``submit_impressions`` / ``submit_outcomes`` put records into a bounded in-memory
    queue (counted in records, not calls). One background thread drains it in batches of
    up to ``batch_size`` (waiting at most ``flush_interval_s`` to fill one) and writes
    them to the store. Failure handling, so that nothing is lost silently:

    * the store raises (LogStoreUnavailable or anything else): the batch is appended to
      the spool (fsync'd per batch). While the spool holds anything, new batches are
      appended behind it, so the store receives records in submission order.
    * the spool is full (``spool_max_bytes``, adopted orphans included): records stay in
      the memory queue until there is room; they are only dropped at submit time.
    * the store is pinged every ``retry_interval_s`` (doubling up to
      ``max_retry_interval_s``; ``flush()`` pings at once); once a ping succeeds the spool
      is replayed in order, a batch at a time. A spool left by a previous process (or
      adopted from a dead sibling, ``shared_spool``) is replayed the same way.
    * a batch that keeps failing with a non-availability error while the store answers
      pings is split and the records that still fail go to ``dead-letter.jsonl``
      (counted in ``dead_lettered``), so one bad record cannot wedge the log; if every
      record of the batch fails, the store is treated as down instead.
    * the queue is full: the caller appends the records to the spool itself, if the
      spool lock is free right away and the spool is under budget (a buffered write; the
      writer thread fsyncs it shortly after). Such overflow records may be stored ahead
      of older queued ones (writes are idempotent upserts: only the order is affected).
    * queue full and spool full (or busy): the records are counted in ``dropped``, an
      ERROR is logged (at most once a second, with totals) and ``health()`` reports
      unhealthy for ``drop_alarm_s`` after the last drop.
    """

    def __init__(
        self,
        store: LogStore,
        spool_dir: Path,
        config: WriterConfig = WriterConfig(),
        *,
        shared_spool: bool = False,
        adopt_root: Path | None = None,
        close_store: bool = True,
        start: bool = True,
    ) -> None:
        """``shared_spool``: ``spool_dir`` is a root shared by several processes; this
        writer spools in its own locked subdirectory and adopts orphaned siblings (see
        :mod:`.spool_dirs`). Otherwise ``spool_dir`` is this writer's alone; with
        ``adopt_root`` it is a subdirectory of that root already claimed by the caller
        (a :mod:`.process` parent), and orphaned siblings are adopted all the same.
        ``close_store``: ``close()`` closes the store too. ``start``: start the writer
        thread now (without it nothing drains the queue until ``close()``)."""
        self.store = store
        self.config = config
        self._close_store = close_store
        self._root: Path | None = None
        self._claim_fd: int | None = None
        if shared_spool:
            self._root = Path(spool_dir)
            own_dir, self._claim_fd = claim_spool_dir(self._root)
        else:
            own_dir = Path(spool_dir)
            self._root = Path(adopt_root) if adopt_root is not None else None
        self._spool = SegmentSpool(own_dir, config.spool_max_bytes, config.segment_bytes)
        self.spool_dir = self._spool.dir
        self._c = _Counters()
        self._stats_lock = threading.Lock()
        self._journal: Journal | None = None
        if config.journal:
            # A previous process on this directory (not shared) may have died: its
            # journal becomes spool records before this writer opens its own.
            self._recover_journals(own_dir)
            self._journal = Journal(own_dir, config.journal_rotate_bytes)
        self._last_journal_log = 0.0
        self._last_journal_error: float | None = None
        self._next_adopt = time.monotonic() + config.adopt_interval_s

        self._cond = threading.Condition()
        self._chunks: deque[list[Record]] = deque()  # each chunk: records of one submit
        self._depth = 0
        self._accepted_seq = 0  # records accepted into the queue, ever
        self._handled_seq = 0  # of those, taken and written / spooled / dead-lettered
        self._flush_waiters = 0
        self._close_deadline = float("inf")
        self._spool_chunk = max(config.batch_size, 10_000)  # records per spool append
        self._ping_epoch = 0  # ping attempts made by the writer thread
        self._closing = False
        if self._root is not None:
            self.adopt_orphans()

        self._store_up = self._spool.is_empty()
        self._next_ping = 0.0
        self._backoff = config.retry_interval_s
        self._last_error = ""
        self._last_drop_log = 0.0
        self._last_drop_time: float | None = None
        self._replay_failures = 0
        self._spool_failing = False  # the last spool append failed with an I/O error
        if not self._spool.is_empty():
            log.warning(
                "decision-log spool holds %d bytes from a previous run; replaying first",
                self._spool.pending_bytes,
            )
        self._thread = threading.Thread(target=self._run, name=WRITER_THREAD_NAME, daemon=True)
        if start:
            self._thread.start()

    def progress(self) -> tuple[int, int]:
        """(records accepted into the queue, records of those handled: stored, spooled
        or dropped), both counted since start; equal when the writer has caught up."""
        with self._cond:
            return self._accepted_seq, self._handled_seq

    # --- producer side ----------------------------------------------------------------

    def submit_impressions(self, impressions: list[Impression]) -> bool:
        """Queue impressions; True when all were accepted (queued or spooled)."""
        return self._submit(list(impressions))

    def submit_page(self, page: LoggedPage) -> bool:
        """Queue a page's impressions (as `submit_impressions`)."""
        records: list[Record] = list(page.impressions())
        return self._submit(records)

    def submit_outcomes(self, outcomes: list[Outcome]) -> bool:
        """Queue outcomes; True when all were accepted (queued or spooled)."""
        return self._submit(list(outcomes))

    def _submit(self, records: list[Record]) -> bool:
        if not records:
            return True
        frame = encode_frame(records) if self._journal is not None and not self._closing else b""
        journaled = True
        with self._cond:
            if self._closing:
                overflow = records
                queued = 0
            else:
                # Below zero when a batch the store refused was put back at the head
                # of a full queue: then nothing more is queued (a negative count would
                # slice `records` wrongly and lose the rest silently).
                room = self.config.queue_size - self._depth
                queued = max(0, min(room, len(records)))
                if frame and self._journal is not None:  # before the queue: the writer may take them at once
                    journaled = self._journal.append(frame, self._accepted_seq + queued)
                if queued > 0:
                    self._chunks.append(records[:queued])
                    self._depth += queued
                    self._accepted_seq += queued
                    if self._depth >= self.config.batch_size:
                        self._cond.notify_all()
                overflow = records[queued:]
        with self._stats_lock:
            self._c.submitted += len(records)
            if not journaled:
                self._c.journal_errors += 1
        if not journaled:
            self._note_journal_error()
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
                self.config.queue_size,
                self._spool.disk_bytes,
                self._spool.max_bytes,
                n,
                total,
            )

    def _note_journal_error(self) -> None:
        now = time.monotonic()
        self._last_journal_error = now
        if now - self._last_journal_log >= 1.0:
            self._last_journal_log = now
            assert self._journal is not None
            log.error(
                "decision-log journal write failed (%s): records are queued but not crash-safe; "
                "%d failed writes in total", self._journal.last_error, self._c.journal_errors,
            )

    def _recover_journals(self, directory: Path) -> None:
        recovered, torn = recover_journals(directory, lambda lines: self._spool.append(lines, fsync=True))
        if recovered or torn:
            log.warning("decision-log: %d records recovered from the journal of a process that died "
                        "(%d files with a torn tail); replaying", recovered, torn)
        with self._stats_lock:
            self._c.journal_recovered += recovered
            self._c.journal_torn += torn

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
        if self._journal is not None:
            with self._cond:  # every accepted record stored or fsync'd in the spool: the journal goes
                done = self._handled_seq >= self._accepted_seq and not self._thread.is_alive()
            self._journal.close(delete=done)
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
            out: dict[str, int | bool] = asdict(self._c)
        out["queue_depth"] = self._depth
        out["spool_bytes"] = self._spool.pending_bytes
        out["spool_corrupt"] = self._spool.corrupt
        out["store_up"] = self._store_up
        out["writer_alive"] = self._thread.is_alive() or self._closing  # False: only a restart helps
        out["journal_bytes"] = self._journal.bytes if self._journal is not None else 0
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
            and time.monotonic() - self._last_drop_time < self.config.drop_alarm_s
        )
        if recent_drop:
            problems.append(f"dropped {s['dropped']} records (queue and spool full)")
        if (
            self._last_journal_error is not None
            and time.monotonic() - self._last_journal_error < self.config.drop_alarm_s
        ):
            problems.append(f"journal writes failing ({s['journal_errors']}): acknowledged records "
                            "are not crash-safe")
        if self._spool_failing:
            problems.append(f"spool writes failing ({self._last_error}): {s['queue_depth']} records "
                            "held in memory only")
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
        if self._root is None:
            return 0
        return adopt_orphans(self._root, self._spool, self._adopted)

    def _adopted(self, nbytes: int) -> None:
        with self._stats_lock:
            self._c.adopted_spools += 1
            self._c.adopted_bytes += nbytes
        with self._cond:
            self._cond.notify_all()

    def _release_claim(self) -> None:
        """Give up this writer's spool directory: removed when empty, else left for
        adoption."""
        fd, self._claim_fd = self._claim_fd, None
        if fd is not None:
            release_spool_dir(self._spool.dir, fd)

    # --- consumer side ----------------------------------------------------------------

    def _take(self, wait: bool, limit: int | None = None) -> list[Record]:
        """Up to ``limit`` (default batch_size) records from the queue, waiting up to
        flush_interval_s to fill a batch if asked."""
        limit = limit or self.config.batch_size
        with self._cond:
            if wait:
                deadline = time.monotonic() + self.config.flush_interval_s
                while (
                    self._depth < self.config.batch_size and not self._closing and not self._flush_waiters
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
            gone = []
            with self._cond:
                self._handled_seq += n
                if self._journal is not None:
                    gone = self._journal.release(self._handled_seq, self._handled_seq == self._accepted_seq)
                self._cond.notify_all()
            if gone and self._journal is not None:
                freed = self._journal.unlink(gone)
                with self._cond:
                    self._journal.bytes -= freed

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
            self._next_adopt = time.monotonic() + self.config.adopt_interval_s
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

        if not closing and not self._store_up and not self._maybe_ping():
            # The store is down and the spool could not take the records (its disk is
            # full too): they wait in the queue until the next ping.
            with self._cond:
                if not self._closing:
                    self._cond.wait(max(0.001, min(self._next_ping - time.monotonic(), 0.2)))
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
        if self._spool.is_empty() and not self._spool_failing:
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
                self._c.outcomes_refused += result.refused
            if result.refused:
                limited.warning("outcomes_refused", "decision log refused %d outcomes of unknown decisions "
                                "(over %d each: forged or wrong decision ids?)", result.refused,
                                MAX_OUTCOMES_PER_UNKNOWN_DECISION)

    def _spool_records(self, records: list[Record]) -> bool:
        """Append and fsync; False (nothing written) when over budget or on I/O error."""
        if not records:
            return True
        try:
            ok = self._spool.append([record_to_json(r) for r in records], fsync=True)
            self._spool_failing = False
        except OSError as exc:  # a full disk: the records wait in memory (the queue) instead
            ok = False
            self._spool_failing = True
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
        self._backoff = min(self._backoff * 2, self.config.max_retry_interval_s)

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
        self._backoff = self.config.retry_interval_s
        return True

    def _pinged(self) -> None:
        with self._cond:
            self._ping_epoch += 1
            self._cond.notify_all()

    def _replay(self, max_batches: int) -> bool:
        """Replay up to max_batches from the spool head; True if anything moved."""
        progressed = False
        for _ in range(max_batches):
            records, length = self._spool.read(self.config.batch_size)
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
        for rec, err in bad:  # the id only: a record carries member ids and features
            log.error("decision-log record %s dead-lettered: %s", rec.decision_id, type(err).__name__)
        if bad:
            self._spool.dead_letter([record_to_json(r) for r, _ in bad])
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


if TYPE_CHECKING:
    _surface: type[DecisionLog] = DecisionLogWriter  # mypy checks the writer fits the core's DecisionLog port

"""The decision-log writer in a child process, fed through the journal: the tail reads
whole frames in order and waits for half-written ones, files go once handled, and no
acknowledged record is lost when either process is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from adapters.decision_log.dlog_helpers import T0, logged_page, make_impression, make_outcome

from keyart.adapters.decision_log import journal as journal_mod
from keyart.adapters.decision_log.journal import Journal, encode_frame, journal_bytes, journals_in
from keyart.adapters.decision_log.journal_tail import JournalTail
from keyart.adapters.decision_log.process import WriterProcess
from keyart.adapters.decision_log.sqlite import SqliteLogStore
from keyart.adapters.decision_log.writer import DecisionLogWriter, WriterConfig
from keyart.settings import KeyartSettings

TESTS = Path(__file__).resolve().parents[2]
HOUR = timedelta(hours=1)


class _Sink:
    """What a tail feeds: records in arrival order, and a settable handled count."""

    def __init__(self) -> None:
        self.got: list = []
        self.handled = 0

    def submit(self, records: list) -> None:
        self.got.extend(records)

    def progress(self) -> tuple[int, int]:
        return len(self.got), self.handled


def test_the_tail_reads_frames_in_order_across_rotated_files(tmp_path) -> None:
    journal = Journal(tmp_path, rotate_bytes=3_000)
    sink = _Sink()
    tail = JournalTail(tmp_path, sink.submit, sink.progress)
    pages = [[make_impression(p * 10 + j) for j in range(10)] for p in range(12)]
    for page in pages[:6]:
        assert journal.append(encode_frame(page), 0)
    tail.poll()
    for page in pages[6:]:
        assert journal.append(encode_frame(page), 0)
    tail.poll()
    assert len(journals_in(tmp_path)) > 2  # it did rotate
    assert [r.decision_id for r in sink.got] == [r.decision_id for page in pages for r in page]
    assert tail.torn == 0 and tail.frames == 12


def test_a_half_written_frame_is_waited_for_not_torn(tmp_path) -> None:
    sink = _Sink()
    tail = JournalTail(tmp_path, sink.submit, sink.progress)
    frame = encode_frame([make_impression(i) for i in range(40)])
    path = tmp_path / journal_mod.journal_name(1)
    with open(path, "ab") as f:
        f.write(frame[:100])
        f.flush()
        assert tail.poll() == 0
        f.write(frame[100:])
        f.flush()
    assert tail.poll() == 40
    assert tail.torn == 0


def test_a_torn_frame_in_a_sealed_file_is_counted_and_the_next_file_read(tmp_path) -> None:
    sink = _Sink()
    tail = JournalTail(tmp_path, sink.submit, sink.progress)
    first = [make_impression(i) for i in range(5)]
    second = [make_impression(i) for i in range(5, 9)]
    (tmp_path / journal_mod.journal_name(1)).write_bytes(encode_frame(first) + encode_frame(first)[:30])
    (tmp_path / journal_mod.journal_name(2)).write_bytes(encode_frame(second))
    tail.poll()
    assert [r.decision_id for r in sink.got] == [r.decision_id for r in first + second]
    assert tail.torn == 1


def test_files_go_only_once_the_writer_has_handled_their_records(tmp_path) -> None:
    journal = Journal(tmp_path, rotate_bytes=1)  # one frame per file
    sink = _Sink()
    tail = JournalTail(tmp_path, sink.submit, sink.progress)
    for p in range(3):
        journal.append(encode_frame([make_impression(p * 10 + j) for j in range(10)]), 0)
    tail.poll()
    assert tail.release() == 0 and len(journals_in(tmp_path)) == 3
    sink.handled = 15  # the first file's 10 records, half the second's
    assert tail.release() == 1
    assert [p.name for p in journals_in(tmp_path)] == [journal_mod.journal_name(2), journal_mod.journal_name(3)]
    sink.handled = 30
    assert tail.release() == 1  # the newest file may still grow: it waits for a successor
    assert [p.name for p in journals_in(tmp_path)] == [journal_mod.journal_name(3)]
    tail.poll(final=True)  # its appender has stopped
    assert tail.release() == 1 and journals_in(tmp_path) == []


def _settings(tmp_path: Path, **kw) -> KeyartSettings:
    return KeyartSettings(data_dir=tmp_path, log_batch_size=50, **kw)


def _stored(settings: KeyartSettings) -> set[str]:
    store = SqliteLogStore(settings.log_sqlite_path)
    try:
        return {i.decision_id for i in store.scan_impressions(T0 - HOUR, T0 + 2 * HOUR)}
    finally:
        store.close()


def test_records_reach_the_store_and_the_log_reports_like_the_thread_writer(tmp_path) -> None:
    settings = _settings(tmp_path)
    w = WriterProcess(settings, settings.spool_root, WriterConfig(batch_size=50))
    child = w.child_pid
    try:
        assert child is not None and child != os.getpid()
        imps = [make_impression(i) for i in range(80)] + [make_impression(i, at=T0, request_id="r") for i in
                                                           range(80, 120)]
        assert w.submit_impressions(imps[:80]) and w.submit_page(logged_page(imps[80:]))  # a page frame
        assert w.submit_outcomes([make_outcome(imps[0].decision_id)])
        assert w.flush(10)
        assert _stored(settings) == {i.decision_id for i in imps}
        stats = w.stats()
        thread_writer = DecisionLogWriter(SqliteLogStore(tmp_path / "other.sqlite"), tmp_path / "other")
        assert set(thread_writer.stats()) <= set(stats)  # the metrics exporter reads the same keys
        thread_writer.close()
        assert stats["submitted"] == 121 and stats["written"] == 121 and stats["dropped"] == 0
        assert stats["writer_alive"] and stats["writer_process_up"] and stats["writer_restarts"] == 0
        assert w.health() == (True, "ok (written 121, replayed 0)")
        assert journal_bytes(w.spool_dir) == 0  # flushed: nothing left in the journal
    finally:
        w.close()
    assert not w.spool_dir.exists()  # every record handled: journal gone, directory released
    assert not psutil.pid_exists(child)  # exited and reaped
    assert not w.submit_impressions([make_impression(999)])  # after close: refused and counted
    assert w.stats()["dropped"] == 1 and not w.health()[0]


def test_a_killed_writer_process_is_restarted_and_replays_the_journal(tmp_path) -> None:
    settings = _settings(tmp_path)
    w = WriterProcess(settings, settings.spool_root, WriterConfig(batch_size=50, flush_interval_s=5.0),
                      watch_interval_s=0.1)
    try:
        first = w.child_pid
        assert first is not None
        w.submit_impressions([make_impression(i) for i in range(30)])  # below a batch: held in the child
        os.kill(first, signal.SIGKILL)
        w.submit_impressions([make_impression(i) for i in range(30, 60)])
        deadline = time.monotonic() + 30
        while w.child_pid in (None, first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert w.child_pid not in (None, first)
        assert w.flush(10)
        assert _stored(settings) == {f"dec-{i:06d}" for i in range(60)}
        assert w.stats()["writer_restarts"] == 1 and w.health()[0]
    finally:
        w.close()


def test_a_writer_process_that_keeps_dying_is_reported_for_a_restart(tmp_path) -> None:
    settings = _settings(tmp_path)
    w = WriterProcess(settings, settings.spool_root, WriterConfig(), watch_interval_s=0.05, max_restarts=0)
    try:
        pid = w.child_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while w.stats()["writer_alive"] and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = w.stats()
        assert stats["writer_alive"] is False and stats["writer_process_up"] is False
        ok, message = w.health()
        assert not ok and "given up" in message
        w.submit_impressions([make_impression(1)])  # journaled all the same: the next writer adopts it
        assert len(journals_in(w.spool_dir)) == 1
    finally:
        w.close()
    assert w.spool_dir.is_dir()  # the journal stays for adoption


def test_a_failing_journal_hands_the_records_over_in_memory(tmp_path, monkeypatch, caplog) -> None:
    settings = _settings(tmp_path)
    w = WriterProcess(settings, settings.spool_root, WriterConfig(batch_size=50))
    try:
        def full_disk(fd, data):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(journal_mod.os, "write", full_disk)
        assert w.submit_impressions([make_impression(i) for i in range(5)])  # handed over: accepted
        # A frame larger than one packet of the side channel cannot go either: dropped, loudly.
        assert not w.submit_impressions([make_impression(i, decision_id=f"big-{i}") for i in range(3000)])
        monkeypatch.undo()
        assert w.flush(10)
        assert _stored(settings) == {f"dec-{i:06d}" for i in range(5)}
        stats = w.stats()
        assert stats["journal_errors"] == 2 and stats["journal_handed_over"] == 5 and stats["dropped"] == 3000
        ok, message = w.health()
        assert not ok and "dropped 3000" in message and "journal writes failing (2)" in message
        logged = [r.getMessage() for r in caplog.records]
        assert any("5 records handed to the writer process in memory" in m for m in logged)
        assert any("3000 records dropped" in m for m in logged)
    finally:
        w.close()


def test_a_store_that_cannot_open_fails_the_start_with_its_reason(tmp_path) -> None:
    (tmp_path / "taken").mkdir()
    settings = _settings(tmp_path, log_sqlite_file=tmp_path / "taken")  # a directory, not a file
    with pytest.raises(RuntimeError, match="did not start: LogStoreUnavailable: cannot open decision log"):
        WriterProcess(settings, settings.spool_root, WriterConfig())
    assert list(settings.spool_root.iterdir()) == []  # its claim released


def test_sigkill_of_the_serving_process_loses_no_acknowledged_impression(tmp_path) -> None:
    """The child outlives its parent: it reads the journal to the end, stores every
    record and releases the spool directory before it exits."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    code = ("import sys; from adapters.decision_log.mp_workers import process_writer_parent; "
            "process_writer_parent(sys.argv[1])")
    parent = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    acked: list[int] = []
    for line in parent.stdout:
        acked.append(int(line))
        if len(acked) >= 500:
            break
    parent.send_signal(signal.SIGKILL)
    acked.extend(int(line) for line in parent.stdout)
    parent.wait(30)
    assert parent.returncode == -signal.SIGKILL, parent.stderr.read() if parent.stderr else ""
    deadline = time.monotonic() + 60
    while psutil.pid_exists(child_pid) and psutil.Process(child_pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the writer process did not finish after its parent died"
        time.sleep(0.1)
    stored = _stored(_settings(tmp_path))
    assert {f"p{p}-{j}" for p in acked for j in range(40)} - stored == set()
    assert list((tmp_path / "log" / "spool").iterdir()) == []  # nothing left to adopt

"""The write-ahead journal: frames round-trip, refuse foreign classes, survive torn
tails, rotate and go once handled, and no acknowledged record is lost to SIGKILL."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from adapters.decision_log.dlog_helpers import T0, FakeStore, logged_page, make_impression, make_outcome

from keyart.adapters.decision_log import journal as journal_mod
from keyart.adapters.decision_log.journal import encode_frame, journals_in, read_journal
from keyart.adapters.decision_log.records import encode_features
from keyart.adapters.decision_log.sqlite import SqliteLogStore
from keyart.adapters.decision_log.writer import DecisionLogWriter, WriterConfig
from keyart.domain import OutcomeKind, ShadowChoice

TESTS = Path(__file__).resolve().parents[2]


def _shadow(k: int) -> ShadowChoice:
    return ShadowChoice(name=f"s{k}", model_version="m-2", image_id=f"img-{k}", propensity=0.5,
                        served_propensity=0.25, expected_score=0.1, served_score=0.2)


def test_frames_round_trip_every_field(tmp_path) -> None:
    page = [make_impression(i, shadows=(_shadow(i), _shadow(i + 1)) if i % 2 else (), experiment="e", cell="b")
            for i in range(40)]
    outcomes = [make_outcome(f"dec-{i:06d}", kind=k, minutes=1.5 * i)
                for i, k in enumerate([OutcomeKind.PLAY_STARTED, OutcomeKind.PLAYBACK_PROGRESS])]
    path = tmp_path / "journal-0000000001.bin"
    path.write_bytes(encode_frame(page) + encode_frame(outcomes))
    records, torn = read_journal(path)
    assert not torn
    assert records == page + outcomes


def test_frames_journaled_with_float_tuple_features_read_back_as_feature_rows(tmp_path) -> None:
    """Journals written while records held float tuples (before FeatureRow) still recover."""
    import struct
    import zlib

    page = [make_impression(i) for i in range(3)]
    values = (0.1, 2.5, float("nan"))
    rows = [journal_mod._impression_row(imp) for imp in page]
    at = journal_mod._FEATURES_AT
    payload = pickle.dumps((0, [row[:at] + (values,) + row[at + 1:] for row in rows]), protocol=5)
    path = tmp_path / "journal-0000000001.bin"
    path.write_bytes(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
    records, torn = read_journal(path)
    assert not torn
    assert [r.features for r in records] == [encode_features(values)] * 3  # float32 bytes, as stored
    assert [r.decision_id for r in records] == [imp.decision_id for imp in page]


def test_a_torn_tail_is_cut_and_a_foreign_class_refused(tmp_path) -> None:
    good = encode_frame([make_impression(1)])
    path = tmp_path / "journal-0000000001.bin"
    path.write_bytes(good + encode_frame([make_impression(2)])[:-3])
    records, torn = read_journal(path)
    assert torn and [r.decision_id for r in records] == ["dec-000001"]

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    payload = pickle.dumps((0, [Boom()]))
    import struct
    import zlib
    path.write_bytes(good + struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
    records, torn = read_journal(path)
    assert torn and len(records) == 1
    assert not (tmp_path / "pwned").exists()


def test_journal_rotates_and_goes_once_handled(tmp_path) -> None:
    store = FakeStore()
    cfg = WriterConfig(queue_size=10_000, batch_size=50, flush_interval_s=0.02, journal_rotate_bytes=4_000)
    w = DecisionLogWriter(store, tmp_path / "spool", cfg)
    gate_pages = 30
    for p in range(gate_pages):
        assert w.submit_impressions([make_impression(p * 10 + j) for j in range(10)])
    assert w.flush(5)
    deadline = time.monotonic() + 5
    while w.stats()["journal_bytes"] and time.monotonic() < deadline:  # emptied when caught up
        time.sleep(0.01)
    assert w.stats()["journal_bytes"] == 0
    assert len(journals_in(w.spool_dir)) <= 1
    assert len(store.impressions) == 300
    w.close()
    assert journals_in(w.spool_dir) == []


def test_a_failing_journal_is_counted_and_alarmed_but_loses_nothing(tmp_path, monkeypatch, caplog) -> None:
    store = FakeStore()
    w = DecisionLogWriter(store, tmp_path / "spool", WriterConfig(flush_interval_s=0.02))

    def full_disk(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_mod.os, "write", full_disk)
    assert w.submit_impressions([make_impression(i) for i in range(5)])
    monkeypatch.undo()
    assert w.flush(5)
    assert len(store.impressions) == 5
    ok, message = w.health()
    assert not ok and "journal writes failing (1)" in message
    assert w.stats()["journal_errors"] == 1
    assert any("journal write failed" in r.message for r in caplog.records)
    w.close()


def _kill_under_load(tmp_path: Path, journal: str) -> tuple[set[str], set[str]]:
    """Run the steady writer, SIGKILL it mid-load, adopt its spool; (acked, stored) ids."""
    root, db = tmp_path / "spool", tmp_path / "d.sqlite"
    SqliteLogStore(db).close()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    code = "import sys; from adapters.decision_log.mp_workers import steady_writer; steady_writer(*sys.argv[1:])"
    child = subprocess.Popen([sys.executable, "-c", code, str(root), str(db), journal], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acked: list[int] = []
    assert child.stdout is not None
    for line in child.stdout:
        acked.append(int(line))
        if len(acked) >= 700:  # past its first flush (1 s), mid-interval of a later one
            break
    child.send_signal(signal.SIGKILL)
    acked.extend(int(line) for line in child.stdout)  # pages acknowledged before it died
    child.wait(30)
    assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""

    store = SqliteLogStore(db)
    w = DecisionLogWriter(store, root, WriterConfig(flush_interval_s=0.02), shared_spool=True, close_store=False)
    assert w.flush(30)
    stored = {i.decision_id for i in store.scan_impressions(T0 - timedelta(hours=1), T0 + timedelta(hours=2))}
    w.close()
    store.close()
    return {f"p{p}-{j}" for p in acked for j in range(40)}, stored


def test_sigkill_at_steady_load_loses_no_acknowledged_impression(tmp_path) -> None:
    acked, stored = _kill_under_load(tmp_path, "on")
    assert len(acked) >= 700 * 40
    assert acked - stored == set()


@pytest.mark.parametrize("journal", ["off"])
def test_without_the_journal_the_same_kill_loses_the_unflushed_window(tmp_path, journal) -> None:
    # The check above can fail: the in-memory queue alone loses what the kill caught.
    acked, stored = _kill_under_load(tmp_path, journal)
    assert len(acked - stored) > 0


def test_an_impression_row_longer_than_this_version_knows_is_refused(tmp_path) -> None:
    row = journal_mod._impression_row(make_impression(1)) + ("a field from a newer version",)
    payload = pickle.dumps((0, [row]), protocol=5)
    with pytest.raises(ValueError, match="this version knows"):
        journal_mod.decode_frame(payload)


def test_a_page_frame_reads_back_as_the_pages_impressions(tmp_path) -> None:
    page = [make_impression(i, member="m7", at=T0, request_id="r-1", experiment="e", cell="b",
                            shadows=(_shadow(i), _shadow(i + 1)) if i % 3 else ()) for i in range(40)]
    logged = logged_page(page)
    assert logged.impressions() == page
    path = tmp_path / "journal-0000000001.bin"
    path.write_bytes(journal_mod.encode_page_frame(logged) + encode_frame([make_outcome("dec-000001")]))
    records, torn = read_journal(path)
    assert not torn
    assert records[:40] == page and records[40].decision_id == "dec-000001"
    # smaller than the same page as rows: the shared fields are written once
    assert len(journal_mod.encode_page_frame(logged)) < len(encode_frame(page))


def test_a_page_frame_with_a_field_or_row_this_version_does_not_know_is_refused() -> None:
    logged = logged_page([make_impression(i, at=T0, request_id="r-1") for i in range(3)])
    unknown = ({**logged.shared, "a_newer_field": 1}, logged.names, logged.rows)
    short_row = (logged.shared, logged.names, [logged.rows[0][:-1], *logged.rows[1:]])
    missing = ({k: v for k, v in logged.shared.items() if k != "member_id"}, logged.names, logged.rows)
    for (shared, names, rows), error, match in ((unknown, TypeError, "unknown fields"),
                                                (short_row, ValueError, "row's length"),
                                                (missing, TypeError, "missing fields")):
        with pytest.raises(error, match=match):
            journal_mod.decode_frame(pickle.dumps((2, dict(shared), names, rows), protocol=5))
    with pytest.raises(ValueError, match="neither"):
        journal_mod.decode_frame(pickle.dumps((2, {}, ()), protocol=5))

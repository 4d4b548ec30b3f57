from __future__ import annotations

from datetime import timedelta

import pytest
from adapters.decision_log.dlog_helpers import T0, make_impression

from keyart.adapters.decision_log.cassandra import CassandraLogStore
from keyart.adapters.decision_log.factory import open_decision_log, open_log_store
from keyart.adapters.decision_log.process import WriterProcess
from keyart.adapters.decision_log.sqlite import SqliteLogStore
from keyart.adapters.decision_log.writer import DecisionLogWriter
from keyart.settings import KeyartSettings


def test_auto_without_contact_points_is_sqlite(tmp_path) -> None:
    settings = KeyartSettings(data_dir=tmp_path)
    store = open_log_store(settings)
    assert isinstance(store, SqliteLogStore)
    assert store.path == tmp_path / "log" / "decisions.sqlite"
    store.close()


def test_cassandra_selected_without_connecting(tmp_path) -> None:
    for backend in ("auto", "cassandra"):
        settings = KeyartSettings(
            data_dir=tmp_path, log_backend=backend, cassandra_contact_points="127.0.0.1"
        )
        store = open_log_store(settings)
        assert isinstance(store, CassandraLogStore)  # lazy: no connection attempted yet
        store.close()
    sqlite = open_log_store(
        KeyartSettings(data_dir=tmp_path, log_backend="sqlite", cassandra_contact_points="x")
    )
    assert isinstance(sqlite, SqliteLogStore)
    sqlite.close()


@pytest.mark.parametrize("in_process", [False, True], ids=["writer_process", "writer_thread"])
def test_open_decision_log_end_to_end(tmp_path, in_process: bool) -> None:
    settings = KeyartSettings(data_dir=tmp_path, log_batch_size=10, log_writer_process=not in_process)
    writer = open_decision_log(settings)
    assert isinstance(writer, DecisionLogWriter if in_process else WriterProcess)
    assert writer.config.batch_size == 10 and writer.config.queue_size == settings.log_queue_size
    writer.submit_impressions([make_impression(i) for i in range(25)])
    assert writer.flush(5)
    store = open_log_store(settings)
    got = list(store.scan_impressions(T0, T0 + timedelta(hours=1)))
    store.close()
    assert len(got) == 25
    writer.close()
    assert (tmp_path / "log" / "spool").is_dir()


def test_the_writer_process_needs_the_journal(tmp_path) -> None:
    settings = KeyartSettings(data_dir=tmp_path, log_journal=False)
    writer = open_decision_log(settings)
    assert isinstance(writer, DecisionLogWriter)  # nothing to feed a child: the thread writes
    writer.close()

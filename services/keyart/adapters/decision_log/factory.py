"""Build the decision log from settings.

``log_backend``: "cassandra", or "auto" with KEYART_CASSANDRA_CONTACT_POINTS set,
gives the Cassandra store (connected lazily, so a service can start while the
cluster is down: the writer spools until it answers); anything else gives the
embedded SQLite store at ``settings.log_sqlite_path`` (WAL, safe for
several processes on one machine). The spool root is ``settings.log_dir / "spool"``,
shared by every process on the machine: each writer spools in its own locked
subdirectory and adopts those of writers that died (see keyart.adapters.decision_log.spool_dirs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keyart.adapters.decision_log.store import LogStore
from keyart.adapters.decision_log.writer import DecisionLogWriter, WriterConfig
from keyart.settings import KeyartSettings

if TYPE_CHECKING:
    from keyart.core.ports import DecisionLog

SPOOL_DIR = "spool"


def uses_cassandra(settings: KeyartSettings) -> bool:
    if settings.log_backend == "cassandra":
        return True
    return settings.log_backend == "auto" and bool(settings.cassandra_contact_points.strip())


def open_log_store(settings: KeyartSettings) -> LogStore:
    """The configured LogStore (Cassandra or SQLite)."""
    if uses_cassandra(settings):
        from keyart.adapters.decision_log.cassandra import CassandraLogStore

        if not settings.cassandra_contact_points.strip():
            raise ValueError("log_backend=cassandra needs KEYART_CASSANDRA_CONTACT_POINTS")
        return CassandraLogStore.from_settings(settings)
    from keyart.adapters.decision_log.sqlite import SqliteLogStore

    return SqliteLogStore(settings.log_sqlite_path)


def open_decision_log(settings: KeyartSettings) -> DecisionLog:
    """A started decision log over the configured store; close() closes both. With
    ``log_writer_process`` and ``log_journal`` (the defaults) the writer runs in a child
    process fed by the journal (:mod:`.process`), else in a thread of this one."""
    config = WriterConfig(
        queue_size=settings.log_queue_size,
        batch_size=settings.log_batch_size,
        spool_max_bytes=settings.log_spool_max_bytes,
        journal=settings.log_journal,
    )
    if settings.log_writer_process and settings.log_journal:
        from keyart.adapters.decision_log.process import WriterProcess

        return WriterProcess(settings, settings.spool_root, config)
    return DecisionLogWriter(open_log_store(settings), settings.spool_root, config, shared_spool=True)

"""Several writer processes sharing one spool root: own locked dirs, orphan adoption."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from adapters.decision_log.dlog_helpers import T0, FakeStore, make_impression

from keyart.adapters.decision_log.records import record_to_json
from keyart.adapters.decision_log.spool_dirs import LOCK_FILE, spool_status
from keyart.adapters.decision_log.sqlite import SqliteLogStore
from keyart.adapters.decision_log.writer import DecisionLogWriter, WriterConfig

TESTS = Path(__file__).resolve().parents[2]


def shared(store, root: Path, **kw) -> DecisionLogWriter:
    args = {"queue_size": 10_000, "batch_size": 50, "spool_max_bytes": 50_000_000,
                "flush_interval_s": 0.02, "retry_interval_s": 0.02, "max_retry_interval_s": 0.05}
    args.update(kw)
    opts = {k: args.pop(k) for k in ("close_store", "start") if k in args}
    return DecisionLogWriter(store, root, WriterConfig(**args), shared_spool=True, **opts)


def wait_for(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_own_locked_dir_removed_on_clean_close(tmp_path) -> None:
    root = tmp_path / "spool"
    w = shared(FakeStore(), root)
    assert w.spool_dir.parent == root and (w.spool_dir / LOCK_FILE).is_file()
    assert f"-{os.getpid()}-" in w.spool_dir.name
    assert [d["alive"] for d in spool_status(root)] == [True]
    w.submit_impressions([make_impression(1)])
    assert w.flush(5)
    w.close()
    assert list(root.iterdir()) == []


def test_crashed_writer_is_adopted_and_replayed(tmp_path) -> None:
    root = tmp_path / "spool"
    code = "import sys; from adapters.decision_log.mp_workers import crashing_writer; crashing_writer(sys.argv[1], 120)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code, str(root)], env=env, capture_output=True, check=False,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    orphan = Path(out.stdout.strip())
    assert orphan.is_dir() and list(orphan.glob("spool-*.jsonl"))
    assert [(d["alive"], d["bytes"] > 0) for d in spool_status(root)] == [(False, True)]

    store = SqliteLogStore(tmp_path / "d.sqlite")
    w = shared(store, root, close_store=False)
    assert w.spool_dir != orphan and not orphan.exists()
    w.submit_impressions([make_impression(1000)])
    assert w.flush(10)
    got = [i.decision_id for i in store.scan_impressions(T0, T0 + timedelta(hours=2))]
    assert got == [f"dec-{i:06d}" for i in range(120)] + ["dec-001000"]
    s = w.stats()
    assert s["adopted_spools"] == 1 and s["replayed"] == 120 and s["spool_bytes"] == 0
    w.close()
    assert list(root.iterdir()) == []
    store.close()


def test_live_writers_never_touch_each_other(tmp_path) -> None:
    root = tmp_path / "spool"
    a_store, b_store = FakeStore(), FakeStore()
    a_store.down = b_store.down = True
    a = shared(a_store, root, adopt_interval_s=0.05)
    b = shared(b_store, root, adopt_interval_s=0.05)
    assert a.spool_dir != b.spool_dir
    a.submit_impressions([make_impression(i) for i in range(50)])
    b.submit_impressions([make_impression(i) for i in range(100, 160)])
    assert a.flush(5) and b.flush(5)
    time.sleep(0.3)  # several adoption passes on both sides
    assert a.stats()["adopted_spools"] == 0 and b.stats()["adopted_spools"] == 0
    a_store.down = b_store.down = False
    assert a.flush(10) and b.flush(10)
    assert a_store.order == [f"dec-{i:06d}" for i in range(50)]
    assert b_store.order == [f"dec-{i:06d}" for i in range(100, 160)]
    a.close()
    b.close()


def test_orphan_adopted_periodically_and_dead_letters_kept(tmp_path) -> None:
    root = tmp_path / "spool"
    store = FakeStore()
    w = shared(store, root, adopt_interval_s=0.05)
    # An orphan appears later (a sibling died), with a dead-letter file and a torn tail.
    orphan = root / "host-1-dead"
    orphan.mkdir()
    (orphan / LOCK_FILE).write_text("")
    lines = b"".join(record_to_json(make_impression(i)) for i in range(3))
    (orphan / "spool-0000000002.jsonl").write_bytes(lines + b'{"_t":"i","dec')
    (orphan / "spool-0000000001.jsonl").write_bytes(record_to_json(make_impression(7)))
    (orphan / "dead-letter.jsonl").write_bytes(record_to_json(make_impression(9)))
    wait_for(lambda: not orphan.exists())
    assert w.flush(5)
    assert store.order == ["dec-000007", "dec-000000", "dec-000001", "dec-000002"]
    assert w.stats()["spool_corrupt"] == 1
    assert [p.name for p in w.spool_dir.glob("dead-letter-*")] == ["dead-letter-host-1-dead-0.jsonl"]
    w.close()
    assert [d["dead_letters"] for d in spool_status(root)] == [1]  # kept for a human


def test_locked_orphan_lookalike_is_left_alone(tmp_path) -> None:
    from keyart.adapters.decision_log.spool_dirs import _try_lock

    root = tmp_path / "spool"
    busy = root / "host-2-alive"
    busy.mkdir(parents=True)
    fd = _try_lock(busy / LOCK_FILE)  # held "by another process"
    (busy / "spool-0000000001.jsonl").write_bytes(record_to_json(make_impression(1)))
    store = FakeStore()
    w = shared(store, root)
    assert w.flush(5) and store.order == [] and busy.exists()
    os.close(fd)
    assert w.adopt_orphans() == 1
    assert w.flush(5) and store.order == ["dec-000001"]
    w.close()

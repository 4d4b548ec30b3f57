"""A real full disk (a 4 MB tmpfs in a private mount namespace) under the decision log.

The documented layout keeps the spool on another disk than the store
(``KEYART_LOG_SPOOL_DIR``): the store's disk filling up then loses nothing and
dead-letters nothing. With store and spool on one full disk, whatever cannot be kept is
counted as dropped, logged and reported by health; nothing is lost silently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[2]


def _run_full_disk(tmp_path: Path, spool_on_store_disk: bool) -> dict:
    store_dir = tmp_path / "store-disk"
    store_dir.mkdir()
    spool_dir = store_dir / "spool" if spool_on_store_disk else tmp_path / "spool-disk"
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("util-linux `unshare` is needed to mount a small tmpfs for the full-disk test")
    as_root = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    body = (
        "import subprocess, sys; "
        "subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', sys.argv[1]], check=True); "
        "from adapters.decision_log.mp_workers import full_disk; full_disk(sys.argv[1], sys.argv[2])"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([unshare, *as_root, "--mount", sys.executable, "-c", body, str(store_dir), str(spool_dir)],
                         env=env, capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_full_store_disk_with_the_spool_elsewhere_loses_nothing(tmp_path) -> None:
    got = _run_full_disk(tmp_path, spool_on_store_disk=False)
    during, after = got["during"], got["after"]
    assert during["store_errors"] > 0 and during["spooled"] > 0, during
    assert during["dropped"] == 0 and during["dead_lettered"] == 0 and during["journal_errors"] == 0, during
    assert got["flushed"] and after["dead_lettered"] == 0 and after["dropped"] == 0, after
    assert got["stored"] == got["submitted"] == 1200


def test_store_and_spool_on_one_full_disk_count_every_record_not_kept(tmp_path) -> None:
    got = _run_full_disk(tmp_path, spool_on_store_disk=True)
    during, after = got["during"], got["after"]
    assert not got["healthy"], got["message"]
    assert "spool writes failing" in got["message"] or "dropped" in got["message"], got["message"]
    assert during["dropped"] > 0 and during["journal_errors"] > 0 and during["dead_lettered"] == 0, during
    # Kept in memory, then stored once space came back, or counted as dropped: nothing else.
    assert got["stored"] + after["dropped"] == got["submitted"], got
    assert after["dead_lettered"] == 0, after

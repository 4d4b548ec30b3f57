"""A serving process's decision log, as a child process the fault tests can SIGKILL.

``python -c "from adapters.decision_log.cassandra_workers import serve_log; serve_log()"``
with KEYART_* in the environment opens the writer exactly as the page service does
(``open_decision_log(KeyartSettings())``: Cassandra store, shared spool under
``$KEYART_DATA_DIR/log/spool``) and obeys one command per line on stdin:

``write N``  submit N new impressions (ids ``<prefix>-<n>``), flush, print one JSON line of
             the writer's stats plus ``acked`` (how many submits were accepted) and ``spool_dir``.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime


def serve_log() -> None:
    from adapters.decision_log.dlog_helpers import make_impression

    from keyart.adapters.decision_log.factory import open_decision_log
    from keyart.settings import KeyartSettings

    prefix = os.environ.get("WORKER_PREFIX", "srv")
    writer = open_decision_log(KeyartSettings())
    sent = acked = 0
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd != "write":
            continue
        now = datetime.now(UTC)
        imps = [make_impression(0, decision_id=f"{prefix}-{sent + k:06d}", at=now) for k in range(int(arg))]
        sent += len(imps)
        if writer.submit_impressions(imps):
            acked += len(imps)
        flushed = writer.flush(60)
        out = dict(writer.stats(), acked=acked, flushed=flushed, spool_dir=str(writer.spool_dir))
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()

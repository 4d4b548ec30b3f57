"""The decision-log writer in a process of its own, fed through the journal.

In the serving process a submit only encodes its records as one journal frame and
appends it (:mod:`.journal`): the write-ahead copy that a killed replica would leave
anyway. A child process follows those files (:mod:`.journal_tail`) and runs the
:class:`~.writer.DecisionLogWriter` (batching, store retries, spool, dead letters) on
them. Measured on the 40x12 page, the writer's thread in the serving process cost more
than its own CPU: it took the GIL from the request thread 40 times a page (every SQLite
step or driver call releases and retakes it). In a process of its own the request
thread got about 0.5 ms of CPU per page cheaper (see the README, "Performance").

Crash safety is the journal's, as before:

* the serving process dies: the child reads the journal to its end, writes or spools
  every record, and exits; it holds the spool directory's claim (the flock) until
  then, so no sibling adopts the directory meanwhile;
* the child dies: the serving process starts a new one (at most ``max_restarts`` in
  ``restart_window_s``; past that, ``stats()["writer_alive"]`` is False and the replica's
  health check asks for a restart), which reads every journal file still on disk from
  its start (records stored twice are harmless: impressions are upserts, outcomes are
  deduplicated by key);
* both die: the journal is adopted by the next writer on the spool root.

``flush``, ``stats``, ``health`` and ``close`` are requests over a socket pair (one JSON
line each way). The serving process spends no thread on the log: the watcher below
wakes once a second to restart a dead child and to total the journal's bytes.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from keyart.adapters.decision_log.journal import (
    Journal,
    Record,
    encode_frame,
    encode_page_frame,
    journal_bytes,
    journals_in,
)
from keyart.adapters.decision_log.journal_tail import JournalTail
from keyart.adapters.decision_log.spool_dirs import claim_spool_dir, release_spool_dir
from keyart.adapters.decision_log.writer import DecisionLogWriter, WriterConfig
from keyart.adapters.gc_tuning import tune_gc_for_serving
from keyart.core.log_limit import LimitedLog
from keyart.domain import Impression, LoggedPage, Outcome

if TYPE_CHECKING:
    from keyart.core.ports import DecisionLog
    from keyart.settings import KeyartSettings

log = logging.getLogger(__name__)
limited = LimitedLog(log)
_REQUEST_TIMEOUT_S = 10.0
_MAX_PACKET = 1 << 20  # above the kernel's packet limit on a Unix socket (its send buffer)


class WriterProcess:
    """A DecisionLog whose writer runs in a child process (see the module's text)."""

    def __init__(
        self,
        settings: KeyartSettings,
        root: Path,
        config: WriterConfig = WriterConfig(),
        *,
        poll_interval_s: float = 0.05,
        watch_interval_s: float = 1.0,
        max_restarts: int = 5,
        restart_window_s: float = 300.0,
    ) -> None:
        if not config.journal:
            raise ValueError("the writer process reads the journal: WriterConfig.journal must be on")
        self.config = config
        self.root = Path(root)
        self._hello = {
            "settings": settings.model_dump(mode="json", exclude={"log_member_key"}),
            "root": str(self.root),
            "config": asdict(config),
            "poll_interval_s": poll_interval_s,
        }
        self.spool_dir, self._claim_fd = claim_spool_dir(self.root)
        self._hello["dir"] = str(self.spool_dir)
        self._journal = Journal(self.spool_dir, config.journal_rotate_bytes, reader_deletes=True)
        self._lock = threading.Lock()  # the journal and the counters below
        self._submitted = self._dropped = self._journal_errors = 0
        self._last_drop: float | None = None
        self._last_journal_error: float | None = None
        self._journal_disk = 0
        self._closed = False
        self._ctl = threading.Lock()  # one request at a time on the channel
        self._child: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._data: socket.socket | None = None  # frames the journal could not take
        self._rfile: IO[bytes] | None = None
        self._restarts: list[float] = []
        self._max_restarts = max_restarts
        self._restart_window_s = restart_window_s
        self._gave_up = False
        self._stop = threading.Event()
        try:
            with self._ctl:
                self._spawn()
        except BaseException:
            self._end_child()  # reaped, not left a zombie
            self._journal.close(delete=True)  # nothing journaled yet
            release_spool_dir(self.spool_dir, self._claim_fd)
            raise
        self._watcher = threading.Thread(target=self._watch, args=(watch_interval_s,),
                                         name="decision-log-watcher", daemon=True)
        self._watcher.start()

    @property
    def child_pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    # --- producer side ----------------------------------------------------------------

    def submit_impressions(self, impressions: list[Impression]) -> bool:
        """Journal impressions for the writer process; True when they were."""
        return self._submit(encode_frame(impressions), len(impressions)) if impressions else True

    def submit_page(self, page: LoggedPage) -> bool:
        """Journal a page's impressions as one page frame (no Impression objects built here)."""
        return self._submit(encode_page_frame(page), len(page)) if len(page) else True

    def submit_outcomes(self, outcomes: list[Outcome]) -> bool:
        """Journal outcomes for the writer process; True when they were."""
        return self._submit(encode_frame(outcomes), len(outcomes)) if outcomes else True

    def _submit(self, frame: bytes, n: int) -> bool:
        """Journal one frame of `n` records."""
        with self._lock:  # close() seals the journal under it: a refusal is decided here
            refused = self._refusal()
            journaled = not refused and self._journal.append(frame, 0)
            self._submitted += n
            if refused:
                self._dropped += n
        if journaled:
            return True
        if refused:
            self._last_drop = time.monotonic()
            limited.error("log_dropped", "DECISION LOG DROPPING RECORDS: %s; dropped %d now, %d in total",
                          refused, n, self._dropped)
            return False
        # The disk is full (or failing): hand the frame to the child directly, where it
        # waits in the writer's memory queue like any other record, just not crash-safe.
        handed = self._hand_over(frame)
        with self._lock:
            self._journal_errors += 1
            if not handed:
                self._dropped += n
        self._last_journal_error = time.monotonic()
        if not handed:
            self._last_drop = self._last_journal_error
        fate = ("handed to the writer process in memory" if handed
                else "dropped (the writer process could not take them either)")
        limited.error("journal_handed" if handed else "journal_dropped",
                      "decision-log journal write failed (%s): %d records %s; %d failed writes in total",
                      self._journal.last_error, n, fate, self._journal_errors)
        return handed

    def _refusal(self) -> str:
        """Why no record may be journaled now, '' when they may."""
        if self._closed:
            return "the log is closed"
        if self._journal_disk > self.config.spool_max_bytes:
            return (f"the journal holds {self._journal_disk} bytes the writer process has not handled "
                    f"(budget {self.config.spool_max_bytes})")
        return ""

    def _hand_over(self, frame: bytes) -> bool:
        """Send one frame over the side channel without waiting; False if it cannot go
        now (no child, its buffer full, or the frame larger than a packet)."""
        data = self._data
        if data is None:
            return False
        try:
            data.send(frame)
        except OSError:
            return False
        return True

    # --- the child ----------------------------------------------------------------------

    def _spawn(self) -> None:
        """Start a child and wait for it to open its store (caller holds ``_ctl``)."""
        parent_end, child_end = socket.socketpair()
        data_end, child_data = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        data_end.setblocking(False)  # a request thread never waits on it
        import keyart

        env = dict(os.environ)
        src = str(Path(keyart.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-m", __name__, str(child_end.fileno()), str(self._claim_fd),
                 str(child_data.fileno())],
                pass_fds=(child_end.fileno(), self._claim_fd, child_data.fileno()), stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            child_end.close()
            child_data.close()
        self._sock, self._data = parent_end, data_end
        self._rfile = parent_end.makefile("rb")
        reply = self._exchange(self._hello, timeout_s=120.0)
        if not reply.get("ok"):
            raise RuntimeError(f"the decision-log writer process did not start: {reply.get('error')}")

    def _exchange(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """One request and its reply (caller holds ``_ctl``); {} when the child is gone."""
        if self._sock is None or self._rfile is None:
            return {}
        try:
            self._sock.settimeout(timeout_s)
            self._sock.sendall(json.dumps(message).encode() + b"\n")
            line = self._rfile.readline()
        except OSError as exc:  # a timeout leaves the channel unusable: end this child
            log.error("decision-log writer process: no reply to %r (%s)", message.get("op", "hello"), exc)
            self._end_child()
            return {}
        if not line:
            return {}
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _request(self, message: dict[str, Any], timeout_s: float = _REQUEST_TIMEOUT_S) -> dict[str, Any]:
        with self._ctl:
            return self._exchange(message, timeout_s)

    def _end_child(self) -> None:
        child, self._child = self._child, None
        for f in (self._rfile, self._sock, self._data):
            if f is not None:
                f.close()
        self._rfile = self._sock = self._data = None
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()

    def _child_alive(self) -> bool:
        return self._child is not None and self._child.poll() is None

    def _rotate(self) -> None:
        """Start a new journal file, so the child can finish and delete the current one
        (it deletes only files it knows complete: those with a successor)."""
        with self._lock:
            if not self._closed:
                self._journal.rotate(0)

    def _watch(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self._rotate()  # a journal file holds at most about interval_s of records
                self._journal_disk = journal_bytes(self.spool_dir)
                with self._ctl:
                    if self._closed or self._child_alive() or self._gave_up:
                        continue
                    code = self._child.returncode if self._child is not None else None
                    now = time.monotonic()
                    self._restarts = [t for t in self._restarts if now - t < self._restart_window_s]
                    if len(self._restarts) >= self._max_restarts:
                        self._gave_up = True
                        log.error("decision-log writer process keeps dying (%d restarts in %.0f s): "
                                  "not restarting it again", len(self._restarts), self._restart_window_s)
                        continue
                    self._restarts.append(now)
                    log.error("decision-log writer process exited (code %s); starting a new one, which "
                              "replays the journal", code)
                    self._end_child()
                    self._spawn()
            except Exception:  # the watcher must outlive one failed restart
                log.exception("decision-log writer process: restart failed")

    # --- control ----------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record submitted before the call is durable: in the store,
        or, while the store is down, in the fsync'd spool, and its journal file gone.
        False on timeout, or when the writer process is not running."""
        self._rotate()
        reply = self._request({"op": "flush", "timeout_s": timeout_s}, timeout_s + _REQUEST_TIMEOUT_S)
        return bool(reply.get("ok"))

    def stats(self) -> dict[str, int | bool]:
        reply = self._request({"op": "stats"})
        out: dict[str, int | bool] = dict(reply.get("stats", {}))
        with self._lock:
            out["submitted"] = self._submitted
            out["dropped"] = int(out.get("dropped", 0)) + self._dropped
            out["journal_errors"] = int(out.get("journal_errors", 0)) + self._journal_errors
        out["journal_bytes"] = int(out.get("journal_bytes", self._journal_disk))
        out["writer_alive"] = bool(out.get("writer_alive", False)) or (
            not self._gave_up and self._watcher.is_alive())  # a dead child is being restarted
        out["writer_process_up"] = bool(reply)
        out["writer_restarts"] = len(self._restarts)
        return out

    def health(self) -> tuple[bool, str]:
        """(healthy, message): the child's writer's health, and this side's drops and
        journal failures within ``drop_alarm_s``, and whether the child runs."""
        reply = self._request({"op": "health"})
        problems: list[str] = []
        now = time.monotonic()
        if not reply:
            problems.append("the decision-log writer process is not running"
                            + (" (given up after repeated deaths)" if self._gave_up else " (restarting)"))
        elif not reply.get("ok"):
            problems.append(str(reply.get("detail", "")))
        if self._last_drop is not None and now - self._last_drop < self.config.drop_alarm_s:
            problems.append(f"dropped {self._dropped} records before the journal")
        if self._last_journal_error is not None and now - self._last_journal_error < self.config.drop_alarm_s:
            problems.append(f"journal writes failing ({self._journal_errors})")
        if problems:
            return False, "; ".join(problems)
        return True, str(reply.get("detail", "ok"))

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop accepting, let the child write out everything journaled (to the store or
        the spool), then release the spool directory."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._journal.close(delete=False)  # the child deletes the files it handled
        self._stop.set()
        with self._ctl:
            reply = self._exchange({"op": "close", "timeout_s": timeout_s}, timeout_s + _REQUEST_TIMEOUT_S)
            if not reply.get("ok"):
                log.error("decision-log writer process did not close cleanly: its journal stays for the "
                          "next writer on %s", self.root)
            if self._child is not None:
                try:
                    self._child.wait(timeout=_REQUEST_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    log.error("decision-log writer process did not exit; killing it")
            self._end_child()
        self._watcher.join(timeout=5.0)
        release_spool_dir(self.spool_dir, self._claim_fd)

    def __enter__(self) -> WriterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the child's side -------------------------------------------------------------------


def _child_main(sock_fd: int, claim_fd: int, data_fd: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the parent, which closes us
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s decision-log-writer[%(process)d] %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=sock_fd)
    rfile, wfile = sock.makefile("rb"), sock.makefile("wb")

    def reply(message: dict[str, Any]) -> None:
        wfile.write(json.dumps(message).encode() + b"\n")
        wfile.flush()

    hello = json.loads(rfile.readline() or b"{}")
    try:
        writer, tail = _open(hello)
    except Exception as exc:  # noqa: BLE001 - told to the parent, which raises it
        log.error("decision-log writer process: cannot start: %s: %s", type(exc).__name__, exc)
        reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    tune_gc_for_serving(int(hello["settings"].get("gc_young_threshold", 0)))
    reply({"ok": True})
    inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def read_requests() -> None:
        for line in rfile:
            inbox.put(json.loads(line))
        inbox.put(None)  # the parent closed the channel, or died

    def read_handed_frames() -> None:
        data = socket.socket(fileno=data_fd)
        while frame := data.recv(_MAX_PACKET):
            try:
                tail.submit_frame(frame)
            except Exception:  # noqa: BLE001 - a frame that does not decode: counted by the tail
                log.exception("decision-log writer process: a handed-over frame does not decode")

    threading.Thread(target=read_requests, name="requests", daemon=True).start()
    threading.Thread(target=read_handed_frames, name="handed-frames", daemon=True).start()
    poll_s = float(hello.get("poll_interval_s", 0.05))
    while True:
        try:
            msg = inbox.get(timeout=poll_s)
        except queue.Empty:
            msg = {}
        op = msg.get("op") if msg else None
        tail.poll(final=msg is None or op == "close")
        if msg is None or op == "close":
            writer.close(float(msg["timeout_s"]) if msg else 30.0)
            tail.poll(final=True)
            tail.release(everything=True)
            left = journals_in(tail.dir)
            if msg is None:  # no parent to release the directory: it is ours alone now
                release_spool_dir(tail.dir, claim_fd)
            else:
                reply({"ok": not left, "left": [p.name for p in left]})
            return 0
        if op == "flush":
            ok = writer.flush(float(msg["timeout_s"]))
            tail.release()
            reply({"ok": ok})
        elif op == "stats":
            reply({"ok": True, "stats": _child_stats(writer, tail)})
        elif op == "health":
            ok, detail = writer.health()
            reply({"ok": ok, "detail": detail})
        elif msg:
            reply({"ok": False, "error": f"unknown request {op!r}"})
        tail.release()


def _open(hello: dict[str, Any]) -> tuple[DecisionLogWriter, JournalTail]:
    from keyart.adapters.decision_log.factory import open_log_store
    from keyart.settings import KeyartSettings

    settings = KeyartSettings.model_validate(hello["settings"])
    config = WriterConfig(**{**hello["config"], "journal": False})  # the parent journals
    writer = DecisionLogWriter(open_log_store(settings), Path(hello["dir"]), config,
                               adopt_root=Path(hello["root"]))

    def submit(records: list[Record]) -> None:
        if isinstance(records[0], Impression):
            writer.submit_impressions(records)  # type: ignore[arg-type]
        else:
            writer.submit_outcomes(records)  # type: ignore[arg-type]

    return writer, JournalTail(Path(hello["dir"]), submit, writer.progress)


def _child_stats(writer: DecisionLogWriter, tail: JournalTail) -> dict[str, int | bool]:
    out = writer.stats()
    out["journal_bytes"] = journal_bytes(tail.dir)
    out["journal_torn"] = int(out.get("journal_torn", 0)) + tail.torn
    out["journal_frames"] = tail.frames
    out["journal_handed_over"] = tail.handed
    return out


if TYPE_CHECKING:
    _surface: type[DecisionLog] = WriterProcess  # mypy checks it fits the core's DecisionLog port


if __name__ == "__main__":
    sys.exit(_child_main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))

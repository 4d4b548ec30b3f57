"""Reading a live journal from another process: the channel of the writer process.

The serving process appends every submit to its journal (:mod:`.journal`) and does
nothing else; the writer process (:mod:`.process`) follows those files with a
:class:`JournalTail`, hands each whole frame's records to its DecisionLogWriter and
deletes a file once every record in it is handled. The journal is then both the
crash-safe copy and the queue between the two processes: no pipe to feed, no thread
in the serving process.

A file is complete once a later one exists: the appender closes a file before it
creates the next, so the tail looks for a successor *before* it reads to the end.
A frame cut short at the end of a file still being written is waited for; at the end
of a complete file (the appender was killed mid-write) or with a bad CRC it is torn:
counted, and the rest of that file skipped, as :func:`.journal.read_journal` does.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path

from keyart.adapters.decision_log.journal import Record, journals_in, next_frame

log = logging.getLogger(__name__)

Submit = Callable[[list[Record]], object]
Progress = Callable[[], tuple[int, int]]
"""(records accepted, records handled) of the writer the tail feeds."""


class JournalTail:
    """Follows the journal files of one directory, oldest first, from the start."""

    def __init__(self, directory: Path, submit: Submit, progress: Progress) -> None:
        self.dir = Path(directory)
        self._submit = submit
        self._progress = progress
        self._path: Path | None = None  # the file being read
        self._offset = 0
        self._skip = False  # the current file is torn: nothing more is read from it
        self._read_names: set[str] = set()  # files read to their end
        self._done: deque[tuple[Path, int]] = deque()  # (file read whole, accepted count then)
        self.frames = 0
        self.torn = 0
        self.handed = 0  # records of frames that came over the side channel instead

    def poll(self, final: bool = False) -> int:
        """Hand over every whole frame written so far; returns the records read.
        ``final``: the appender has stopped, so the newest file is complete too."""
        read = 0
        while True:
            files = [p for p in journals_in(self.dir) if p.name not in self._read_names]
            if self._path is None:
                if not files:
                    return read
                self._path, self._offset, self._skip = files[0], 0, False
            # A successor seen before the read means the read reaches this file's end.
            complete = final or any(p.name > self._path.name for p in files)
            read += self._read_available(complete)
            if not complete:
                return read
            self._read_names.add(self._path.name)
            self._done.append((self._path, self._progress()[0]))
            self._path = None

    def _read_available(self, complete: bool) -> int:
        assert self._path is not None
        try:
            with open(self._path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:  # taken by an adopter after its owner died
            return 0
        read = pos = 0
        while not self._skip:
            try:
                records, end = next_frame(data, pos)
            except Exception:  # noqa: BLE001 - a damaged frame ends the file's readable part
                self._torn()
                break
            if records is None:
                break  # still being written, or torn (decided below)
            self._submit(records)
            self.frames += 1
            read += len(records)
            pos = end
        self._offset += pos
        if complete and not self._skip and pos < len(data):
            self._torn()  # a complete file ending in part of a frame
        return read

    def submit_frame(self, frame: bytes) -> int:
        """Hand over one whole frame that came another way, not through a file (the
        journal could not take it); returns its records. Raises ValueError if damaged."""
        records, end = next_frame(frame)
        if records is None or end != len(frame):
            raise ValueError("a damaged frame")
        self._submit(records)
        self.handed += len(records)
        return len(records)

    def _torn(self) -> None:
        self._skip = True
        self.torn += 1
        log.warning("decision-log journal %s: a torn or corrupt frame; the rest of the file is skipped",
                    self._path.name if self._path else "?")

    def release(self, everything: bool = False) -> int:
        """Delete the files read whole whose records the writer has all handled;
        ``everything``: the writer has stopped with every record handled, so every file
        read goes. Returns the files deleted."""
        accepted, handled = self._progress()
        gone = 0
        while self._done and (self._done[0][1] <= handled or (everything and accepted == handled)):
            path = self._done.popleft()[0]
            path.unlink(missing_ok=True)
            self._read_names.discard(path.name)
            gone += 1
        return gone

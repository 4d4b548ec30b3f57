"""Per-process spool directories under a root shared by every writer on the machine.

Several processes (Ray Serve replicas) spool into one root (``settings.log_dir /
"spool"``): each in its own directory, ``<hostname>-<pid>-<random>``, held with an
exclusive ``fcntl.flock`` on its ``.lock`` for its lifetime (the kernel releases it
when the process dies, however it dies). A free lock therefore means a dead owner, and
a live writer adopts that orphan's records. Two live writers never read, write or
delete each other's files. The segment files inside a directory are :mod:`.spool`'s.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from keyart.adapters.decision_log.journal import journal_bytes, journals_in, recover_journals

if TYPE_CHECKING:
    from keyart.adapters.decision_log.spool import SegmentSpool

log = logging.getLogger(__name__)

SEGMENT_PREFIX = "spool-"
SEGMENT_SUFFIX = ".jsonl"
DEAD_LETTER_FILE = "dead-letter.jsonl"
LOCK_FILE = ".lock"
_NEW_PREFIX = ".new-"
_DEAD_LETTER_GLOB = "dead-letter*.jsonl"


def fsync_dir(path: Path) -> None:
    """Make renames and unlinks in ``path`` durable (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # pragma: no cover - best effort
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _try_lock(path: Path, create: bool = True) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if another process (or
    another open file in this process) holds it, or it cannot be opened."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def segment_name(seq: int) -> str:
    """File name of segment number ``seq`` (zero-padded, so names sort like numbers)."""
    return f"{SEGMENT_PREFIX}{seq:010d}{SEGMENT_SUFFIX}"


def segment_seq(path: Path) -> int:
    """The number in a segment's file name; ValueError if it is not one."""
    return int(path.name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)])


def _seq_or_none(path: Path) -> int:
    try:
        return segment_seq(path)
    except ValueError:
        return -1


def segments_in(directory: Path) -> list[Path]:
    """The segment files in ``directory``, oldest first (other names are ignored)."""
    found = [p for p in directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}") if p.is_file()]
    return sorted((p for p in found if _seq_or_none(p) >= 0), key=_seq_or_none)


def claim_spool_dir(root: Path) -> tuple[Path, int]:
    """Create and lock this process's own spool directory under ``root``.

    Returns (directory, fd holding the flock on its lock file); closing the fd (or the
    process dying) releases the claim. The directory is made under a ``.new-`` name,
    locked, then renamed, so no other writer ever sees it unlocked.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40]
    for _ in range(10):
        name = f"{host or 'host'}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp = root / f"{_NEW_PREFIX}{name}"
        try:
            tmp.mkdir()
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue
        fd = _try_lock(tmp / LOCK_FILE)
        if fd is None:  # pragma: no cover - a cleaner removed it in between: retry
            continue
        try:  # for a human reading the directory; the flock is the claim
            os.write(fd, f"pid={os.getpid()} host={socket.gethostname()} at={time.time():.0f}\n".encode())
        except OSError:
            pass
        final = root / name
        try:
            os.rename(tmp, final)
        except OSError:  # pragma: no cover
            os.close(fd)
            continue
        fsync_dir(root)
        return final, fd
    raise OSError(f"cannot create a spool directory under {root}")  # pragma: no cover


def release_spool_dir(directory: Path, fd: int) -> None:
    """Give up a claimed directory (``fd`` is the claim): removed when nothing but its
    lock file is left, else left unlocked for a sibling or the next process to adopt."""
    try:
        if not any(p.name != LOCK_FILE for p in directory.iterdir()):
            (directory / LOCK_FILE).unlink(missing_ok=True)
            try:
                directory.rmdir()
            except OSError:
                pass
    except OSError:  # pragma: no cover - best effort
        log.exception("decision-log: cannot clean the spool directory")
    finally:
        os.close(fd)


def spool_status(root: Path) -> list[dict[str, object]]:
    """Every per-process spool directory under ``root``: name, whether its owner is
    alive (its lock is held), pending bytes and segment count. Probing an orphan takes
    its lock for an instant (a writer adopting then simply retries later)."""
    out: list[dict[str, object]] = []
    root = Path(root)
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith("."):
            continue
        fd = _try_lock(d / LOCK_FILE, create=False) if (d / LOCK_FILE).exists() else None
        alive = fd is None and (d / LOCK_FILE).exists()
        if fd is not None:
            os.close(fd)
        segs = segments_in(d) + journals_in(d)
        out.append(
            {
                "dir": d.name,
                "alive": alive,
                "segments": len(segs),
                "bytes": sum(p.stat().st_size for p in segs if p.exists()),
                "dead_letters": sum(1 for _ in d.glob(_DEAD_LETTER_GLOB)),
            }
        )
    return out


def adopt_orphans(root: Path, spool: SegmentSpool, on_adopted: Callable[[int], None]) -> int:
    """Move every orphaned sibling of ``spool.dir`` under ``root`` (lock free: its
    owner died) into ``spool``; ``on_adopted(nbytes)`` is called for each directory
    that held segments, which is also the count returned.

    An orphan's segments are renamed, in order, to the tail of ``spool`` (same file
    system: no copy, no extra disk), its dead-letter files move along, then its lock
    file and directory are removed. An adopter that dies half way leaves the rest in
    the orphan (adopted again later) and what it took in its own directory (an orphan
    in turn): nothing is lost, and a record replayed twice is harmless (impressions are
    upserts, outcomes are deduplicated by key). Stale ``.new-`` directories of
    processes that died while claiming are removed.
    """
    if not root.is_dir():
        return 0
    adopted = 0
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d == spool.dir:
            continue
        if d.name.startswith(_NEW_PREFIX):
            _remove_stale_new(d)
            continue
        if d.name.startswith("."):
            continue
        fd = _try_lock(d / LOCK_FILE)
        if fd is None:
            continue  # its writer is alive
        try:
            nbytes = _adopt_dir(d, spool)
            if nbytes is not None:
                on_adopted(nbytes)
                adopted += 1
        finally:
            os.close(fd)
    return adopted


def _adopt_dir(d: Path, spool: SegmentSpool) -> int | None:
    """Adopt one locked orphan; the bytes taken, or None if it held no segments."""
    segments = segments_in(d)
    nbytes = spool.adopt(segments)
    # The orphan's write-ahead journal: records it acknowledged but had not yet stored.
    journaled = journal_bytes(d)
    recovered, _torn = recover_journals(d, lambda lines: spool.append(lines, fsync=True))
    if recovered:
        nbytes += journaled
    for i, dl in enumerate(sorted(d.glob(_DEAD_LETTER_GLOB))):
        dest = spool.dir / f"dead-letter-{d.name}-{i}.jsonl"
        os.rename(dl, dest)
    fsync_dir(spool.dir)
    leftovers = [p for p in d.iterdir() if p.name != LOCK_FILE]
    if leftovers:
        log.warning("decision-log spool %s: left unknown files %s", d, [p.name for p in leftovers])
    else:
        (d / LOCK_FILE).unlink(missing_ok=True)
        try:
            d.rmdir()
        except OSError:  # another adopter re-created its lock file meanwhile
            pass
        fsync_dir(d.parent)
    if not segments and not recovered:
        return None
    log.warning(
        "decision-log: adopted orphaned spool %s (%d segments, %d journal records, %d bytes); replaying",
        d.name, len(segments), recovered, nbytes,
    )
    return nbytes


def _remove_stale_new(d: Path) -> None:
    """A ``.new-`` directory left by a process that died while creating it."""
    try:
        if time.time() - d.stat().st_mtime < 60.0:
            return
    except FileNotFoundError:
        return
    fd = _try_lock(d / LOCK_FILE, create=False)
    if fd is None:
        return
    try:
        if not segments_in(d):
            for p in d.iterdir():
                p.unlink(missing_ok=True)
            d.rmdir()
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)

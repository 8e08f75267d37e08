"""Atomic file writes: readers see the old file or the complete new one, never a partial one,
and a write killed half-way (SIGKILL, out of memory, preemption) leaves nothing behind for long.
Reads (`open_regular`) take regular files only, so a FIFO or a device named as a model or a
dataset file is refused instead of blocking the reader or feeding it endless bytes.

The new content goes to a temporary file beside the target, named ``.<target name>.<8 random
characters>.tmp`` (`tempfile.mkstemp`'s alphabet), which is renamed over the target
(`os.replace`) when complete. A killed writer cannot delete its temporary file, so every write
first removes the stale temporary files of *its own target*: names of exactly that pattern, whose
writer is gone. A live writer holds an exclusive lock (``flock``) on its temporary file until the
rename, so a concurrent writer of the same target never removes it. Other files, and other
targets' temporary files, are never touched. (Where ``flock`` does not exist, e.g. Windows, no
temporary file is removed.)
"""

from __future__ import annotations

import errno
import glob
import os
import re
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

try:
    import fcntl
except ImportError:  # Windows: no locks, so no cleanup of other writers' files
    fcntl = None  # type: ignore[assignment]


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file (or a link to one). A
    directory raises IsADirectoryError, a FIFO, device or socket an OSError naming it, without
    waiting for a FIFO's writer (it is opened non-blocking)."""
    nonblock = getattr(os, "O_NONBLOCK", 0)  # POSIX; Windows has no FIFOs to wait on
    fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, device or socket)", str(path))
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def temp_pattern(path: Path) -> re.Pattern[str]:
    """The names `atomic_open` gives the temporary files of ``path`` (and no other names)."""
    return re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writes of ``path`` left beside it; returns them.

    Only names matching `temp_pattern` are considered, and only those no live writer holds
    locked."""
    path = Path(path)
    if fcntl is None or not path.parent.is_dir():
        return []
    pattern, removed = temp_pattern(path), []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if not pattern.fullmatch(candidate.name):
            continue
        try:  # non-blocking: opening a FIFO of that name would wait for a writer forever
            fd = os.open(candidate, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:  # gone already, or a symlink: not ours
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a directory: not ours
                raise OSError
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # not ours, or locked: a writer is alive
            os.close(fd)
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into: a temporary file in the same directory,
    renamed over ``path`` (`os.replace`) when the block ends normally, deleted when it raises.
    Stale temporary files of ``path`` from killed writes are removed first (module docstring).
    ``path`` must be a regular file or not exist: a directory, device (``/dev/null``), FIFO or
    socket is refused before anything is written, not replaced."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give the name of a file to write")
    if path.exists() and not path.is_file():  # the rename would replace a device or a FIFO
        raise FileExistsError(
            f"{path} exists and is not a regular file (a device, FIFO or socket); give the "
            f"name of a file to write"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    try:
        fd, tmp = _locked_temp(path)
    except OSError as exc:  # e.g. a read-only directory: name the target, not the temporary name
        raise type(exc)(
            exc.errno, f"{exc.strerror} (cannot create a file in {path.parent})", str(path)
        ) from exc
    lock = os.dup(fd)  # keeps the lock after the file object closes, until the rename is done
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        os.close(lock)


def _locked_temp(path: Path) -> tuple[int, str]:
    """A new temporary file for ``path``, locked; retried if a concurrent cleanup removed it
    between its creation and the lock."""
    while True:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return fd, tmp
        os.close(fd)

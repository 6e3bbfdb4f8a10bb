"""Atomic file writes and cross-process locks: the one place the workbench writes files durably.

A reader must never see half a file (a crash mid-write leaves the old file, or none), and a file
must survive a power cut once its writer returned. Every writer therefore goes the same way: a
temporary file with a unique name in the target's folder (so the rename stays on one file system
and two writers never share it), written, fsynced, renamed over the target with `os.replace`, then
the folder fsynced so the rename itself is durable. Temporary files are hidden and named
``.<name>.<random>.tmp``; a crash can leave one behind, never a half-written target.

>>> with atomic_path(folder / "table.parquet") as tmp:   # doctest: +SKIP
...     pq.write_table(table, tmp)                       # any writer that takes a path
>>> atomic_write(folder / "CURRENT", "3\\n")             # doctest: +SKIP

`file_lock` serialises writers across processes on every platform (filelock: flock on Unix,
msvcrt on Windows); readers never take it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from workbench.config import file_mode


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in folder `path` durable (a no-op where folders cannot be
    opened, e.g. on Windows, whose renames need no folder fsync)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def probe_write(folder: str | os.PathLike[str]) -> None:
    """Create and remove a hidden file in `folder`: raises the OSError a real write there would,
    so a command can refuse an unwritable path before any work."""
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
    os.close(fd)
    os.unlink(probe)


def os_reason(exc: OSError) -> str:
    """Why a path could not be used, in words: a file standing where a folder must be, or the
    system's reason (e.g. 'Permission denied')."""
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return "a file is in the way of a folder"
    return exc.strerror or str(exc)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a written file's content to disk (before a rename makes it visible)."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _temp_beside(path: Path) -> Path:
    """A new, empty hidden file in `path`'s folder with the mode `open()` would give `path`."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600: give the file the umask's mode
    finally:
        os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content to; on leaving the block normally it
    is fsynced and renamed over `path` (then the folder is fsynced). If the block raises, the
    temporary file is removed and `path` is left as it was. The folder must exist."""
    target = Path(path)
    tmp = _temp_beside(target)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Replace `path` with `data` (text is encoded with `encoding`) so that a reader sees the old
    content or the new, never a mix; returns `path`."""
    target = Path(path)
    raw = data.encode(encoding) if isinstance(data, str) else data
    with atomic_path(target) as tmp:
        tmp.write_bytes(raw)
    return target


def exclusive_write(path: str | os.PathLike[str], data: str | bytes, *, encoding: str = "utf-8") -> bool:
    """Create `path` holding `data` only if no file of that name exists; False when one does.

    The file appears whole: a synced temporary file is hard-linked to the name (which fails when
    the name exists). Where the file system has no hard links the name is created exclusively
    and then filled, so there a crash can leave it partly written.
    """
    target = Path(path)
    raw = data.encode(encoding) if isinstance(data, str) else data
    tmp = _temp_beside(target)
    try:
        tmp.write_bytes(raw)
        fsync_file(tmp)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system: exclusive create, then fill
            try:
                with open(target, "xb") as fh:
                    fh.write(raw)
                    fh.flush()
                    os.fsync(fh.fileno())
            except FileExistsError:
                return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)
    return True


def file_lock(path: str | os.PathLike[str]) -> FileLock:
    """An exclusive lock held through the file `path` across processes and threads (use it as a
    context manager; it waits for the holder). The lock file stays in place after release, so it
    never changes under a waiting writer."""
    return FileLock(path, preserve_lock_file=True, thread_local=False)


__all__ = ["atomic_path", "atomic_write", "exclusive_write", "file_lock", "fsync_dir"]

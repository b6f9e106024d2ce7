"""Atomic outputs: write to a temporary name beside the target, rename only when complete.

An interrupted run leaves at most a ``.NAME.HOST~PID.*.part`` file (removed on any exception,
KeyboardInterrupt included), never a half-written file under the final name. A run killed
outright (``kill -9``, a power cut) cannot remove its own: the next rawvid run in that folder
removes the temp files and folders that name this host and a process that no longer exists
(:func:`remove_stale`); those of live processes, or of other hosts on a shared disk, stay.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import RawvidError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"
#: rawvid's temp names with their owner, by kind (is a folder): files ``.NAME.HOST~PID.RANDOM.part``
#: (:func:`temp_path`), folders ``.rawvid-HOST~PID-RANDOM`` (:func:`temp_dir`)
_OWNED = {False: re.compile(r"^\..+\.(?P<host>[A-Za-z0-9]+)~(?P<pid>\d+)\.[A-Za-z0-9_]+\.part$"),
          True: re.compile(r"^\.rawvid-(?P<host>[A-Za-z0-9]+)~(?P<pid>\d+)-[A-Za-z0-9_]+$")}


def owner() -> str:
    """``HOST~PID``: which process a temp name belongs to, so a later run can prove it gone."""
    return f"{_HOST}~{os.getpid()}"


def temp_path(target: str | os.PathLike) -> Path:
    """A fresh temporary path in the target's folder (same filesystem, so rename is atomic)."""
    target = Path(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.{owner()}.", suffix=".part", dir=target.parent or ".")
    os.close(fd)
    return Path(name)


def temp_dir(folder: str | os.PathLike) -> tempfile.TemporaryDirectory:
    """A work folder beside the outputs, named for its owner (removed when the block ends)."""
    return tempfile.TemporaryDirectory(prefix=f".rawvid-{owner()}-", dir=folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or an absurd number): not provably ours and gone
    return True


def remove_stale(folder: str | os.PathLike) -> list[str]:
    """Remove the temp files and folders in ``folder`` left by rawvid processes of this host that
    are gone (killed before they could clean up); returns their names."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        is_dir = p.is_dir() and not p.is_symlink()
        m = _OWNED[is_dir].match(p.name)
        if not m or m["host"] != _HOST or int(m["pid"]) == os.getpid() or _alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(p) if is_dir else p.unlink()
            removed.append(p.name)
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path to fill; on success it is renamed to ``target``, on error removed."""
    tmp = temp_path(target)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.filename is None:  # a full disk (ENOSPC) or an I/O error names no file: name the output
            raise RawvidError(target, f"cannot write: {exc.strerror or exc}") from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temp file for binary writing; it replaces ``target`` only if the block succeeds."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())

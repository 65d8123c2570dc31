"""Atomic file writes: the one helper behind every file the package writes for later reading.

A file is written to a temporary name in its own folder (``.NAME.tmp-<pid>-<random>``), flushed to
disk (``fsync``), renamed over its target (``os.replace``, atomic on POSIX), and the folder is
fsynced so the rename survives a crash. An exception at any point, ``KeyboardInterrupt``
included, removes the temporary file and leaves the target as it was; a kill leaves at most a
temporary, which :func:`remove_stale_temporaries` deletes (datasets do so under their lock).

Temporaries being written are registered (:func:`pending_temporaries`) so that the Ctrl-C watcher
of ``mofdft solve`` / ``ks`` (:mod:`mofdft_jax.commands.interrupt`) deletes them before it ends
the process.

Used by: checkpoints and training states (:mod:`mofdft_jax.model.checkpoint`,
:mod:`mofdft_jax.train.loop`), dataset shards, manifests and visited-density samples
(:mod:`mofdft_jax.data.shards`, :mod:`mofdft_jax.data.visited`), the outputs of ``mofdft solve``
/ ``ks`` and the reproduction's caches.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from pathlib import Path

#: Marker in the names of temporary files (``.NAME.tmp-<pid>-<hex>``).
TMP_MARK = ".tmp-"

_PENDING: set[str] = set()
_LOCK = threading.Lock()


def pending_temporaries() -> list[str]:
    """Paths of the temporary files being written right now (any thread)."""
    with _LOCK:
        return sorted(_PENDING)


def fsync_dir(folder) -> None:
    """Persist a rename in ``folder`` (best effort: not every file system fsyncs a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path, *, fsync: bool = True):
    """Yield a temporary path beside ``path`` to write to; when the block completes the file is
    fsynced (``fsync``) and renamed over ``path``. The folder is created if needed.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    with _LOCK:
        _PENDING.add(str(tmp))
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        with _LOCK:
            _PENDING.discard(str(tmp))
    if fsync:
        fsync_dir(path.parent)


def write_bytes_atomic(path, data: bytes, *, fsync: bool = True) -> None:
    """Replace ``path`` by ``data`` in one step (:func:`atomic_path`)."""
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text_atomic(path, text: str, *, fsync: bool = True) -> None:
    """Replace ``path`` by ``text`` (UTF-8) in one step (:func:`atomic_path`)."""
    write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def remove_stale_temporaries(directory) -> list[str]:
    """Delete temporaries left in ``directory`` by killed writers (``.NAME.tmp-…``); returns their
    names. Call it only where no writer can be active (e.g. under a dataset's lock)."""
    removed = []
    for entry in os.scandir(directory):
        if entry.name.startswith(".") and TMP_MARK in entry.name:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.name)
    return sorted(removed)


__all__ = ["TMP_MARK", "atomic_path", "fsync_dir", "pending_temporaries",
           "remove_stale_temporaries", "write_bytes_atomic", "write_text_atomic"]

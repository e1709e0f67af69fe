"""Staging folders beside a destination, their cleanup, and signals while files are written.

Every file is staged in ``.graphprune-<pid>-<random>`` (a folder, or one temporary file) in the
destination's folder and renamed into place. The pid in the name lets a later run tell a stale
staging folder (its process is gone, it is older than :data:`STALE_AFTER_S`) from one in use;
:func:`sweep_stale` removes the stale ones before anything new is staged.

While the CLI runs, SIGTERM and SIGHUP raise :class:`Interrupted` (SIGINT raises Python's
``KeyboardInterrupt``), so the ``finally`` blocks that remove staging run; the CLI then exits
with 128 + the signal number (130 for SIGINT, 143 for SIGTERM). :func:`signals_deferred`
holds signals back over the few renames that replace a model and its data, so a signal never
lands between them. SIGKILL cannot be caught: what it leaves is swept by a later run (staging
here; an unreferenced data file of a model by :func:`graphprune._io.save_model`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

PREFIX = ".graphprune-"
STALE_AFTER_S = 3600.0  # a dead process's staging younger than this is left alone
LEGACY_STALE_AFTER_S = 86400.0  # staging without an owner pid: left alone for a day
_OWNER = re.compile(r"\.graphprune-(\d+)-")
# What earlier versions staged, exactly as tempfile names it: no pid to ask, so only a name of
# this form, owned by this user and untouched for LEGACY_STALE_AFTER_S, is swept.
_LEGACY = re.compile(r"\.graphprune-(?:sweep-|oracle-)?[a-z0-9_]{8}(?:\.onnx|\.json|\.html)?")
_CAUGHT = (signal.SIGTERM, signal.SIGHUP)
_DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_active: set[Path] = set()


class Interrupted(BaseException):
    """A caught termination signal; unwinds like ``KeyboardInterrupt`` (exit 128 + signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


def prefix() -> str:
    """``.graphprune-<pid>-``: the name prefix of this process's staging."""
    return f"{PREFIX}{os.getpid()}-"


def make_staging(folder: Path) -> Path:
    """A new staging folder in ``folder`` (OSError if it cannot be made), registered for cleanup."""
    path = Path(tempfile.mkdtemp(prefix=prefix(), dir=folder))
    _active.add(path)
    return path


def remove_staging(path: Path) -> None:
    """Removes one staging folder (whatever it holds) and forgets it."""
    shutil.rmtree(path, ignore_errors=True)
    _active.discard(path)


def remove_all() -> None:
    """Removes every staging folder this process still has (the CLI calls it on the way out)."""
    for path in list(_active):
        remove_staging(path)


@contextlib.contextmanager
def staging_folder(folder: Path) -> Iterator[Path]:
    """A staging folder in ``folder`` for the duration of the block."""
    path = make_staging(folder)
    try:
        yield path
    finally:
        remove_staging(path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid < 2**31  # another user's live process; an impossible pid owns nothing
    return True


def age_s(info: os.stat_result, now: float | None = None, linked: bool = False) -> float:
    """Seconds since a file was last written (or, with ``linked``, also linked or renamed).

    ``linked`` takes the later of mtime and ctime: a hard link or rename sets only ctime.
    """
    last = max(info.st_mtime, info.st_ctime) if linked else info.st_mtime
    return (time.time() if now is None else now) - last


def _stale(entry: os.DirEntry, now: float, max_age_s: float | None) -> bool:
    """Staging of a process that is gone (by its pid), or legacy staging that is ours and old."""
    owner = _OWNER.match(entry.name)
    if owner is not None:
        if _alive(int(owner.group(1))):
            return False
        limit = STALE_AFTER_S if max_age_s is None else max_age_s
        return age_s(entry.stat(follow_symlinks=False), now) >= limit
    if _LEGACY.fullmatch(entry.name) is None:
        return False
    limit = LEGACY_STALE_AFTER_S if max_age_s is None else max_age_s
    return _ours_and_old(Path(entry.path), now, limit)


def _ours_and_old(path: Path, now: float, limit: float) -> bool:
    """A regular file, or a folder of regular files, of this user, none touched in ``limit``."""
    top = path.lstat()
    if stat.S_ISDIR(top.st_mode):
        inside = [item.lstat() for item in path.iterdir()]
        if not all(stat.S_ISREG(info.st_mode) for info in inside):
            return False
    elif stat.S_ISREG(top.st_mode):
        inside = []
    else:
        return False
    return all(info.st_uid == os.getuid() and age_s(info, now) >= limit
               for info in (top, *inside))


def sweep_stale(folder: Path, max_age_s: float | None = None) -> list[Path]:
    """Removes staging in ``folder`` that no running job can be using.

    Staging named with an owner pid (``.graphprune-<pid>-...``) goes once that process is gone
    and it is older than ``max_age_s`` (default :data:`STALE_AFTER_S`). Staging of earlier
    versions (``.graphprune-<8 tempfile characters>``, no pid) goes only when it is this user's,
    and it and everything in it are older than ``max_age_s`` (default
    :data:`LEGACY_STALE_AFTER_S`). Errors are ignored (a folder that cannot be listed has
    nothing to sweep). Returns what was removed.
    """
    removed = []
    now = time.time()
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(PREFIX)]
    except OSError:
        return removed
    for entry in entries:
        try:
            if not _stale(entry, now, max_age_s):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _raise_interrupted(signum, frame) -> None:
    del frame
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_caught() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Interrupted` in the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_interrupted) for s in _CAUGHT}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Holds SIGINT, SIGTERM and SIGHUP back in the block; they arrive right after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

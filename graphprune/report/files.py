"""Atomic writes of report files: staged beside the destination, then renamed into place."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from graphprune.destinations import check_writable_path
from graphprune.errors import OutputError
from graphprune.staging import prefix


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(text: str, path: Path) -> None:
    """Writes ``text`` to ``path`` atomically; OutputError if it cannot be written there."""
    path = Path(path)
    check_writable_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix(), suffix=path.suffix,
                                   dir=path.parent if str(path.parent) else ".")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write here ({exc.strerror or exc})") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; reports are not
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, say: the old file stays, the staged one goes
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(data: dict, path: Path) -> None:
    """Writes ``data`` to ``path`` atomically (NaN and infinities become null)."""
    write_text(json.dumps(_finite(data), indent=1), path)


def _finite(data):
    if isinstance(data, float) and (data != data or data in (float("inf"), float("-inf"))):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data

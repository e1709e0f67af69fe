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


INDENT_BELOW = 2**20  # bytes of compact JSON under which a report is indented throughout
OUTLINE_DEPTH = 3  # above it: containers this deep get a line per entry, deeper ones one line


def write_json(data: dict, path: Path) -> None:
    """Writes ``data`` to ``path`` atomically (NaN and infinities become null)."""
    write_text(dumps(data), path)


def dumps(data) -> str:
    """JSON of ``data`` (NaN and infinities as null): indented, or outlined when long.

    Python's indenting encoder is pure Python, several times slower than its compact C one (the
    report of a 100k-node model is 40 MB).
    Compact JSON above :data:`INDENT_BELOW` bytes is written as an outline instead: the first
    :data:`OUTLINE_DEPTH` levels of containers with one entry per line, each deeper value
    compact on its line (a group, a node's costs).
    """
    try:
        compact = json.dumps(data, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere: those become null
        data = _finite(data)
        compact = json.dumps(data)
    if len(compact) < INDENT_BELOW:
        return json.dumps(data, indent=1)
    return _outline(data, 0)


def _outline(value, level: int) -> str:
    if level >= OUTLINE_DEPTH or not isinstance(value, dict | list) or not value:
        return json.dumps(value)
    pad = " " * (level + 1)
    if isinstance(value, dict):
        entries = [f"{pad}{json.dumps(str(k))}: {_outline(v, level + 1)}"
                   for k, v in value.items()]
        return "{\n" + ",\n".join(entries) + "\n" + " " * level + "}"
    entries = [pad + _outline(v, level + 1) for v in value]
    return "[\n" + ",\n".join(entries) + "\n" + " " * level + "]"


def _finite(data):
    if isinstance(data, float) and (data != data or data in (float("inf"), float("-inf"))):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data

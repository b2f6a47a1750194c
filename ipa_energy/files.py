"""How records reach disk: whole or not at all.

Every results, profile and summary file goes through :func:`write_atomic`: the text is
written to a temporary file in the same folder, flushed to disk, then renamed over the
target, so a reader (or a run restarted after a crash) never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

__all__ = ["write_atomic", "write_json", "write_jsonl"]


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Replace `path` with `text` (UTF-8) atomically; creates the folder; mode 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, doc: BaseModel | dict | list) -> Path:
    """A model or a JSON document, indented, atomically."""
    text = doc.model_dump_json(indent=2) if isinstance(doc, BaseModel) else json.dumps(doc, indent=2)
    return write_atomic(path, text + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[BaseModel | dict]) -> Path:
    """One JSON object per line (models dumped as JSON), atomically."""
    lines = [r.model_dump_json() if isinstance(r, BaseModel) else json.dumps(r, default=str) for r in rows]
    return write_atomic(path, "".join(line + "\n" for line in lines))

"""Local files written whole: a reader (or another Job sharing the folder) sees the old or the new text."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

# Temporary names start with this prefix; ObjectCache.trim leaves such files alone while they are fresh.
PART_PREFIX = ".part-"


def write_text_atomic(path: Path, text: str) -> None:
    """Writes text to a unique temporary file beside path and renames it over path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{PART_PREFIX}{uuid.uuid4().hex}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()

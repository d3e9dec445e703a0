"""Atomic file writes: a temporary file beside the target, then a rename (atomic on POSIX), so a reader or
a resumed run sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: Path | str, data: bytes | str, encoding: str = "utf-8") -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path

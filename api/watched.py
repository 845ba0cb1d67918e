"""Files read again when they change (the tokens file, the TLS pair): how a change shows."""

from __future__ import annotations

import os

Stamp = tuple[float, int] | None


def stamp(path: str) -> Stamp:
    """The file's modification time and size; None while it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime, stat.st_size

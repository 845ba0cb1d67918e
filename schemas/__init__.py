"""What crosses our boundaries, as data: frps plugin payloads (plain readers), REST input
(marshmallow) and the process's settings. Imports nothing of ours."""

from __future__ import annotations

import json
from typing import Any


def parse_json(text: str | bytes) -> Any:
    """`json.loads` of UTF-8 (what HTTP JSON is; decoding first skips the detection of
    UTF-16 and -32), with nesting too deep for it a ValueError like any other bad JSON
    (CPython's parser recurses: ~200 KB of `[` raises RecursionError)."""
    try:
        return json.loads(text.decode() if isinstance(text, bytes) else text)
    except RecursionError as e:
        raise ValueError("nested too deeply") from e

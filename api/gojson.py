"""JSON as Go's `encoding/json` (and so gin's `c.JSON`) writes it, for the original's
routes: their callers read what the Go adapter wrote. Compact; fields in the order of the
Go structs (entries.Success, entries.Error, entries.CoreFrp), as our dicts are built;
UTF-8 as it is, but `<`, `>`, `&`, U+2028 and U+2029 escaped, as Go escapes them for
HTML."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from schemas import whole_text

_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_json(obj: object) -> bytes:
    # The characters escaped can only be inside strings: the whole text may be translated.
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).translate(_GO_ESCAPES)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a refusal quoting a header's bytes that are not UTF-8
        return whole_text(text).encode()


def go_json_response(
    obj: object, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """`obj` answered as gin's `c.JSON(status, obj)` answers it."""
    return web.Response(
        body=go_json(obj),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )

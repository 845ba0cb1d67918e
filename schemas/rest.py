"""Input of the REST API: the original frp_adapter's (query string, form or JSON body) and ours.

The patched frps of the original sent these as a query string; forms send empty strings
for empty fields, which count as absent here. The original's routes ignore keys they do
not read, as gin did; the versioned API's refuse them.
"""

from __future__ import annotations

import codecs
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from schemas import half_surrogate
from schemas.labels import key_error, value_error

_port = validate.Range(min=1, max=65535)
_address = validate.Length(min=1, max=253)


class _RestInput(Schema):
    class Meta:
        unknown = EXCLUDE

    @pre_load
    def drop_empty(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {key: value for key, value in data.items() if value not in ("", None)}


class FrpCreateSchema(_RestInput):
    """The original took every field as it came: an NM with no address or port yet is
    stored with them empty; only a port no dial could use is refused."""

    frp_server_ip_address = fields.String(load_default=None, validate=_address)
    unique_id = fields.String(required=True)
    port = fields.Integer(load_default=None, validate=_port)
    mac_address = fields.String(load_default=None, validate=validate.Length(max=64))
    host_name = fields.String(load_default=None, validate=_address)


class FrpUpdateSchema(_RestInput):
    frp_server_ip_address = fields.String(load_default=None, validate=_address)
    unique_id = fields.String(required=True)
    port = fields.Integer(load_default=None, validate=_port)
    mac_address = fields.String(load_default=None, validate=validate.Length(max=64))
    host_name = fields.String(load_default=None, validate=_address)
    # Absent: the status stays as it is; anything but "online" is offline (the original's).
    status = fields.String(load_default=None, validate=validate.Length(max=64))


LIST_PAGE_DEFAULT = 500
LIST_PAGE_MAX = 5000


class NodeListQuerySchema(Schema):
    """Pages as Kubernetes lists have them: `limit` nodes, then `metadata.continue` names
    where the next page starts; pass it back as `continue`."""

    class Meta:
        unknown = RAISE

    status = fields.String(load_default=None, validate=validate.OneOf(["online", "offline"]))
    limit = fields.Integer(
        load_default=LIST_PAGE_DEFAULT, validate=validate.Range(min=1, max=LIST_PAGE_MAX)
    )
    continue_ = fields.String(data_key="continue", load_default=None)
    # Every node as ADDED, then each change as it happens (NDJSON), as a Kubernetes watch.
    watch = fields.Boolean(load_default=False)
    # Kubernetes' grammar, read by `api.selection` (which knows the frps names).
    label_selector = fields.String(data_key="labelSelector", load_default=None)
    field_selector = fields.String(data_key="fieldSelector", load_default=None)


class RecordQuerySchema(Schema):
    """The latest records (recorded sessions, audited actions), by node and by user."""

    class Meta:
        unknown = RAISE

    node = fields.String(load_default=None, validate=validate.Length(1, 253))
    user = fields.String(load_default=None, validate=validate.Length(1, 253))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


def _text_encoding(name: str) -> None:
    """A terminal's encoding: a text encoding that leaves ASCII as it is (not UTF-16, not
    EBCDIC), which the shell bridge can decode a chunk at a time."""
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError) as e:  # ValueError: a NUL in the name
        raise ValidationError(f"unknown encoding {name!r}") from e
    try:
        usable = (
            info._is_text_encoding
            and codecs.getincrementaldecoder(name)(errors="replace").decode(b"ls\xff") != ""
            and "ls -l\r\n".encode(name) == b"ls -l\r\n"
        )
    except (ValueError, TypeError, LookupError):  # UnicodeError is a ValueError
        usable = False
    if not usable:
        raise ValidationError(f"{name!r} is not an encoding a terminal can use")


def _no_nul(value: str) -> None:
    if "\0" in value:
        raise ValidationError("must not contain NUL characters")


def _utf8(value: str) -> None:
    """Text that can be sent to a node: JSON's `\\ud800` escapes decode to lone surrogates,
    which no encoding takes."""
    if half := half_surrogate(value):
        raise ValidationError(f"is not valid Unicode text: {half}")


_terminal_size = validate.Range(min=1, max=10000)


class ShellQuerySchema(Schema):
    """`?cols=&rows=&encoding=&tty=` of a shell WebSocket; the route supplies the size
    defaults. `tty=false` runs the shell without a PTY, as `ssh -T`: it reads the client's
    input as a pipe, to its end (an `{"type": "eof"}` frame), and its output and errors
    come back together. Other parameters are ignored: consoles add cache-busters and their
    own tokens."""

    class Meta:
        unknown = EXCLUDE

    cols = fields.Integer(validate=_terminal_size)
    rows = fields.Integer(validate=_terminal_size)
    encoding = fields.String(load_default="utf-8", validate=_text_encoding)
    tty = fields.Boolean(load_default=True)

    @pre_load
    def unset(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """A size a page left unset (`?cols=undefined`) is the route's default, as the
        original, which took none from the query, had it."""
        return {k: v for k, v in data.items() if v not in ("", "undefined", "null")}


def _file_mode(text: str) -> None:
    if not (text.isdigit() and set(text) <= set("01234567") and int(text, 8) <= 0o7777):
        raise ValidationError(f"must be an octal mode such as 0644, not {text!r}")


class PathQuerySchema(Schema):
    """`?path=<absolute path>` on a node."""

    class Meta:
        unknown = EXCLUDE

    path = fields.String(required=True, validate=validate.And(validate.Length(1, 4096), _utf8))


class FileQuerySchema(PathQuerySchema):
    """`?path=<absolute path>[&mode=0644]` of a node's file (mode: uploads only)."""

    mode = fields.String(load_default="0644", validate=_file_mode)


class BatchFileQuerySchema(FileQuerySchema):
    """A file for many nodes: `nodes=a,b,...` (NM names) or `status=online`, narrowed by
    `labelSelector` and `fieldSelector`, as batch exec."""

    nodes = fields.String(load_default=None, validate=validate.Length(min=1, max=1 << 20))
    status = fields.String(load_default=None, validate=validate.OneOf(["online"]))
    label_selector = fields.String(data_key="labelSelector", load_default=None)
    field_selector = fields.String(data_key="fieldSelector", load_default=None)
    concurrency = fields.Integer(load_default=32, validate=validate.Range(1, 1024))

    @validates_schema
    def one_selector(self, data: dict[str, Any], **_: Any) -> None:
        _one_selection(data, 'give "nodes", "status=online", "labelSelector" or "fieldSelector"')

    @post_load
    def listed(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """`nodes` as batch exec has it: a list of names."""
        if data["nodes"] is not None:
            data["nodes"] = data["nodes"].split(",")
        return data


class PortForwardQuerySchema(Schema):
    """`?port=N`: the node's TCP port, on its 127.0.0.1."""

    class Meta:
        unknown = EXCLUDE

    port = fields.Integer(required=True, validate=validate.Range(min=1, max=65535))


class ResizeSchema(Schema):
    """`{"type": "resize", "cols": N, "rows": M}`, a shell's control frame; a size left out
    is the original's default, 180 columns or 50 rows."""

    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.Equal("resize"))
    cols = fields.Integer(load_default=180, strict=True, validate=_terminal_size)
    rows = fields.Integer(load_default=50, strict=True, validate=_terminal_size)


_command = validate.And(validate.Length(min=1, max=65536), _no_nul, _utf8)
_timeout = validate.Range(min=0, min_inclusive=False, max=86400)


class OriginalExecSchema(_RestInput):
    """The original's exec form: `nm_name` (when not in the path) and `cmd`."""

    nm_name = fields.String(load_default=None)
    cmd = fields.String(required=True, validate=_command)


class ExecSchema(Schema):
    class Meta:
        unknown = RAISE

    cmd = fields.String(required=True, validate=_command)
    timeout = fields.Float(load_default=None, validate=_timeout)


class BatchExecSchema(ExecSchema):
    """Run `cmd` on the listed `nodes` (NM names), or on every online node, each narrowed
    by `labelSelector` and `fieldSelector`."""

    nodes = fields.List(
        fields.String(validate=validate.And(validate.Length(min=1, max=253), _utf8)),
        load_default=None,
        validate=validate.Length(min=1, max=10000),
    )
    status = fields.String(load_default=None, validate=validate.OneOf(["online"]))
    label_selector = fields.String(data_key="labelSelector", load_default=None)
    field_selector = fields.String(data_key="fieldSelector", load_default=None)
    concurrency = fields.Integer(load_default=32, strict=True, validate=validate.Range(1, 1024))

    @validates_schema
    def one_selector(self, data: dict[str, Any], **_: Any) -> None:
        _one_selection(data, 'give "nodes", "status": "online", "labelSelector" or "fieldSelector"')


def _one_selection(data: dict[str, Any], missing: str) -> None:
    """A batch names its nodes, or chooses them (selectors may narrow a list)."""
    if data.get("nodes") is not None and data.get("status") is not None:
        raise ValidationError('give "nodes" or "status", not both')
    if all(
        data.get(key) is None for key in ("nodes", "status", "label_selector", "field_selector")
    ):
        raise ValidationError(missing)


def _label_key(key: str) -> None:
    if why := key_error(key):
        raise ValidationError(why)


def _label_value(value: str | None) -> None:
    if value is not None and (why := value_error(value)):
        raise ValidationError(why)


class _LabelsPatchSchema(Schema):
    class Meta:
        unknown = RAISE

    labels = fields.Dict(
        keys=fields.String(validate=_label_key),
        values=fields.String(allow_none=True, validate=_label_value),
        required=True,
    )


class LabelPatchSchema(Schema):
    """A JSON merge patch of the NM's labels, as `kubectl label` sends: `{"metadata":
    {"labels": {"site": "sh", "stage": null}}}` sets site and removes stage."""

    class Meta:
        unknown = RAISE

    metadata = fields.Nested(_LabelsPatchSchema, required=True)

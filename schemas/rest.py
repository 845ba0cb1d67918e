"""Input of the original frp_adapter REST API (query string, form or JSON body).

The patched frps of the original sent these as a query string; forms send empty strings
for empty fields, which count as absent here. Unknown keys are an error.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, pre_load, validate

_port = validate.Range(min=1, max=65535)
_address = validate.Length(min=1, max=253)


class _RestInput(Schema):
    class Meta:
        unknown = RAISE

    @pre_load
    def drop_empty(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {key: value for key, value in data.items() if value not in ("", None)}


class FrpCreateSchema(_RestInput):
    frp_server_ip_address = fields.String(required=True, validate=_address)
    unique_id = fields.String(required=True)
    port = fields.Integer(required=True, validate=_port)
    mac_address = fields.String(load_default=None, validate=validate.Length(max=64))
    host_name = fields.String(load_default=None, validate=_address)


class FrpUpdateSchema(_RestInput):
    frp_server_ip_address = fields.String(load_default=None, validate=_address)
    unique_id = fields.String(required=True)
    port = fields.Integer(load_default=None, validate=_port)
    mac_address = fields.String(load_default=None, validate=validate.Length(max=64))
    host_name = fields.String(load_default=None, validate=_address)
    status = fields.String(required=True, validate=validate.OneOf(["online", "offline"]))


class NodeListQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    status = fields.String(load_default=None, validate=validate.OneOf(["online", "offline"]))

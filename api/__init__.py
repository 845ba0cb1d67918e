"""The HTTP surface: one route table, its handlers, access control, the OpenAPI document,
metrics and audit; `create_app` wires plugin/, ssh/ and nodes/ behind it."""

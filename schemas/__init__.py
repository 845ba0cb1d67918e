"""marshmallow schemas for what crosses our boundaries: frps plugin payloads, REST input."""

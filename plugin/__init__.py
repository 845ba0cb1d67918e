"""frps server-plugin webhooks turned into node events."""

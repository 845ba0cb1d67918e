"""frps's side: server-plugin webhooks turned into node events, admission, and
reconciliation with frps's dashboard (the truth when configured)."""

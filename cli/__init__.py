"""The process: the `frp-adapter` commands, logging, the terminal client of a running
adapter, and this host's unique_id for frpc. A top-level package because it sits above
every other (it starts the app `api/` builds) and holds code no other part runs."""

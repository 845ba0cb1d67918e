"""The process: `frp-adapter` commands, logging, the terminal client, this host's unique_id.
A top-level package because it sits above all the others: it starts the app api/ builds."""

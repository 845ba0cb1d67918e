"""The process's one owner, `runtime.adapter.Adapter`: what the HTTP layer serves.

A package of its own, between `api/` (HTTP only) and the parts it owns (`plugin/`, `ssh/`,
`nodes/`), so that building and closing the process is written once, outside the web
framework, and `api/` cannot reach past it into stores and trackers.
"""

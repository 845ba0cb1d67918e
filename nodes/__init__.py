"""Edge nodes: their state, the NodeMaintenance object that records it, and its store.

A top-level package of its own because plugin/ (frps events), api/ (REST) and later the
reconciler all change and read node state, and none of the fixed folders is the home of a
domain model shared by all of them.
"""

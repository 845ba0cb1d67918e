"""Edge nodes: their state in memory and the one transition that changes it, the
NodeMaintenance object that records it, heartbeat expiry, the clock, and the stores.

A top-level package because plugin/ (frps events), ssh/ and api/ all read and change node
state, and none of the fixed folders is the home of a domain they share.
"""

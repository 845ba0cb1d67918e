"""Edge nodes: their state and the one transition that changes it, the NodeMaintenance
object that records it, heartbeat expiry, the clock, the writer and the stores."""

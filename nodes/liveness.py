"""What is known of each frps's life: whether the adapter can reach it, and since when not.

Its watch (`plugin.liveness`) writes the probes' results; its plugin calls write
`heard_at`; SSH reads it, so a node behind an frps that is gone is refused for that reason
rather than dialled, and `/readyz` and the metrics show it.
"""

from __future__ import annotations

import math
from datetime import datetime

# The reason of a node taken offline because its frps stayed unreachable.
FRPS_UNREACHABLE = "FrpsUnreachable"


class FrpsLiveness:
    """One frps. The plugin path only stores a monotonic time in `heard_at`, per call: no
    allocation besides the float, no lock."""

    __slots__ = (
        "address",
        "failing_since",
        "heard_at",
        "last_error",
        "name",
        "past_down_after",
        "unreachable_since",
        "watched",
    )

    def __init__(self, name: str, address: str, *, watched: bool) -> None:
        self.name = name
        self.address = address
        self.watched = watched  # FRPA_FRPS_DOWN_AFTER is not 0
        self.heard_at = -math.inf  # monotonic: its last plugin call
        # Monotonic: when the first probe went unanswered, since an answer or a plugin call.
        self.failing_since: float | None = None
        self.unreachable_since: datetime | None = None  # the same instant, to show
        self.last_error: str | None = None
        self.past_down_after = False  # unreachable that long, when last probed

    @property
    def down(self) -> bool:
        """Unreachable for FRPA_FRPS_DOWN_AFTER, and still: its nodes are taken offline."""
        return self.past_down_after and self.unreachable

    @property
    def unreachable(self) -> bool:
        """A probe went unanswered, and nothing was heard from frps since it began."""
        return self.failing_since is not None and self.heard_at < self.failing_since

    def why(self) -> str:
        since = self.unreachable_since.isoformat() if self.unreachable_since else "now"
        return f"frps {self.name} unreachable since {since}: {self.last_error}"

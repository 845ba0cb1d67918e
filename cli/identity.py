"""This host's unique_id, computed as the original frpc fork did, so NM names stay the same.

Over the MAC addresses of the physical (non-virtual) interfaces: drop the colons and the
first two hex digits, read the rest as a base-16 number, multiply by 10, take the
smallest; the id is the last 20 hex digits of the SHA-1 of that number in decimal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

SYS_CLASS_NET = Path("/sys/class/net")


class NoPhysicalInterfaceError(LookupError):
    pass


def unique_id_from_macs(macs: Iterable[str]) -> str:
    numbers = [int(mac.replace(":", "")[2:], 16) * 10 for mac in macs]
    if not numbers:
        raise NoPhysicalInterfaceError("no MAC address of a physical network interface found")
    return hashlib.sha1(str(min(numbers)).encode(), usedforsecurity=False).hexdigest()[-20:]


def physical_macs(sys_class_net: Path = SYS_CLASS_NET) -> list[str]:
    """MACs of interfaces backed by a device (virtual ones, like lo or veth, have none)."""
    macs = []
    for interface in sorted(sys_class_net.iterdir()):
        if not (interface / "device").exists():
            continue
        mac = (interface / "address").read_text().strip().lower()
        if mac and mac != "00:00:00:00:00:00":
            macs.append(mac)
    return macs

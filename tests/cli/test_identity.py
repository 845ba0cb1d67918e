from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cli.identity import NoPhysicalInterfaceError, physical_macs, unique_id_from_macs


def test_the_unique_id_is_the_original_frpc_forks() -> None:
    # By hand: "52:54:00:12:34:56" -> "540012 3456" -> 0x5400123456 * 10 = 3607784459100
    expected = hashlib.sha1(b"3607784459100").hexdigest()[-20:]
    assert unique_id_from_macs(["52:54:00:12:34:56", "52:54:00:ff:ff:ff"]) == expected
    assert len(expected) == 20


def test_without_a_physical_interface_there_is_no_unique_id() -> None:
    with pytest.raises(NoPhysicalInterfaceError):
        unique_id_from_macs([])


def test_only_interfaces_backed_by_a_device_count(tmp_path: Path) -> None:
    for name, mac, physical in [
        ("lo", "00:00:00:00:00:00", False),
        ("veth0", "aa:bb:cc:dd:ee:ff", False),
        ("eth0", "52:54:00:12:34:56", True),
        ("eth1", "00:00:00:00:00:00", True),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "address").write_text(mac + "\n")
        if physical:
            (tmp_path / name / "device").mkdir()
    assert physical_macs(tmp_path) == ["52:54:00:12:34:56"]

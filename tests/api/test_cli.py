from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--address", "nowhere"], {}, "FRP_ADAPTER_ADDRESS must be host:port"),
        ([], {"FRP_ADAPTER_ADDRESS": ":99999"}, "FRP_ADAPTER_ADDRESS must be host:port"),
        (["serve", "--store", "mysql://x"], {}, "FRPA_STORE: unsupported store"),
        ([], {"FRP_SERVER_API": "frps:7500"}, "FRP_SERVER_API must be an http(s) URL"),
        (["--close-grace-period", "soon"], {}, "FRPA_CLOSE_GRACE_PERIOD must be seconds"),
        ([], {"FRPA_PLUGIN_FAILURE_MODE": "maybe"}, "must be open or closed"),
        (["--log-level", "loud"], {}, "FRPA_LOG_LEVEL must be"),
    ],
)
def test_invalid_settings_exit_2_with_one_clear_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run(*args, env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert message in result.stderr


def test_unique_id_prints_a_20_hex_digit_id_or_says_why_not() -> None:
    result = run("unique-id")
    if result.returncode == 0:
        assert len(result.stdout.strip()) == 20
        int(result.stdout, 16)
    else:
        assert result.stderr.startswith("frp-adapter: cannot compute unique_id")

"""README.md's two set-up commands work as written: the first installs and starts the
adapter in a fresh copy of this checkout; the second is exactly what CI runs."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import free_port

ROOT = Path(__file__).parents[1]


def command(marker: str) -> str:
    found = re.search(rf"<!-- {marker} -->\n\n    (.+)\n", (ROOT / "README.md").read_text())
    assert found is not None, f"README.md has no command after <!-- {marker} -->"
    return found[1]


def test_the_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == command("test")


@pytest.mark.e2e
def test_the_install_command_starts_the_adapter_from_a_fresh_checkout(tmp_path: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    for name in filter(None, tracked.decode().split("\0")):
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name).read_bytes())
    port = free_port()
    # The user's environment (it says where pip and npm find their registries), and a
    # free port: where it listens is not part of the command.
    env = {**os.environ, "FRP_ADAPTER_ADDRESS": f"127.0.0.1:{port}"}
    with (tmp_path / "install.log").open("wb") as log:
        process = subprocess.Popen(
            ["bash", "-c", command("install-and-run")],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 600
        while True:
            assert process.poll() is None, (tmp_path / "install.log").read_text()
            assert time.monotonic() < deadline, "the adapter did not start"
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer,
            ):
                assert answer.status == 200
                break
            time.sleep(0.5)
        # npm is on this machine: the install built the web console too.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/", timeout=5) as answer:
            assert b"/ui/assets/console.js" in answer.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/assets/console.js") as answer:
            assert answer.status == 200
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    assert (tmp_path / "frpa.db").exists()  # the embedded default store, in the checkout
    assert (tmp_path / ".venv" / "bin" / "frp-adapter").exists()

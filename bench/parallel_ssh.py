"""parallel-ssh, the peer of batch exec, in a virtualenv of its own.

It cannot share the adapter's: its ssh-python installs a top-level `ssh` package, which
hides the adapter's own `ssh/` and leaves `frp-adapter` unable to start.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.sshd import Sshd

VERSION = "2.16.0.post1"
VENV = Path.home() / ".cache" / "frp-adapter-bench" / f"parallel-ssh-{VERSION}"

# gevent + libssh2, so it runs in a process of its own, timed there from the first
# connect to the last output; its interpreter's start-up is not counted.
_RUN = textwrap.dedent(
    """
    import sys, time
    from pssh.clients import ParallelSSHClient
    from pssh.config import HostConfig
    ports, user, key, pool = sys.argv[1].split(","), sys.argv[2], sys.argv[3], sys.argv[4]
    start = time.perf_counter()
    client = ParallelSSHClient(["127.0.0.1"] * len(ports), user=user, pkey=key,
                               host_config=[HostConfig(port=int(p)) for p in ports],
                               pool_size=int(pool), allow_agent=False)
    output = client.run_command("uptime")
    client.join(output)
    lines = sum(1 for host in output for line in host.stdout if "load average" in line)
    assert lines == len(ports), lines
    print(time.perf_counter() - start)
    """
)


def _python() -> Path:
    """The virtualenv's interpreter, made (once, from PyPI) on first use."""
    python, installed = VENV / "bin" / "python", VENV / "installed"
    if not installed.exists():  # an install cut short starts over
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"parallel-ssh=={VERSION}"], check=True
        )
        installed.touch()
    return python


def uptime(sshd: Sshd, ports: list[int], pool: int) -> float:
    """Seconds for `uptime` on one connection per port, `pool` at a time."""
    result = subprocess.run(
        [str(_python()), "-c", _RUN, ",".join(map(str, ports)), sshd.user,
         str(sshd.user_key), str(pool)],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return float(result.stdout)

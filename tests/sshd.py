"""A real OpenSSH sshd on 127.0.0.1, as an edge node runs it (the recipe: REAL_PEERS.md
in the shared folder beside this repository)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import eventually, free_port

SSHD = "/usr/sbin/sshd"  # sshd refuses to run unless started by absolute path


@dataclass(frozen=True)
class Sshd:
    port: int
    host_key: Path
    user_key: Path
    user: str

    def host_public_key(self) -> str:
        """The host key as `status.sshHostKey` records it: type and base64, no comment."""
        kind, data, *_ = self.host_key.with_suffix(".pub").read_text().split()
        return f"{kind} {data}"


def keygen(path: Path) -> Path:
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def configure(directory: Path, name: str, forced_command: Path | None = None) -> tuple[Path, Sshd]:
    """Keys and an sshd_config in `directory`: sshd's own host key (`<name>-hostkey`) and
    one authorized user key (`userkey`), shared by every sshd in `directory`; with
    `forced_command`, the key may only run that (`command=` in authorized_keys)."""
    directory.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    sshd = Sshd(
        port=free_port(),
        host_key=keygen(directory / f"{name}-hostkey"),
        user_key=keygen(directory / "userkey"),
        user=getpass.getuser(),
    )
    authorized = sshd.user_key.with_suffix(".pub")
    if forced_command is not None:
        authorized = directory / f"{name}-authorized_keys"
        key = sshd.user_key.with_suffix(".pub").read_text()
        authorized.write_text(f'command="{forced_command}",no-pty {key}')
    config = directory / f"{name}_config"
    config.write_text(
        f"Port {sshd.port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {sshd.host_key}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "PidFile none\n"
        "PrintMotd no\n"
        "PrintLastLog no\n"
        "UseDNS no\n"
        "MaxStartups 500\n"
        "MaxSessions 100\n"
        "Subsystem sftp internal-sftp\n"
        # The node is this machine, and bash under sshd reads the user's ~/.bashrc, which
        # here runs `pyenv rehash`: its words went into every command's stderr, and an exec
        # killed mid-way left pyenv's lock for every shell after. Shells get a home of their
        # own, so the node is a plain one whatever the machine's user has set up.
        f"SetEnv HOME={directory}\n"
    )
    return config, sshd


@contextlib.asynccontextmanager
async def running_sshd(
    directory: Path, *, name: str = "sshd", forced_command: Path | None = None
) -> AsyncIterator[Sshd]:
    """sshd in the foreground on a free port, configured by `configure`."""
    config, sshd = configure(directory, name, forced_command)
    port = sshd.port
    log = (directory / f"{name}.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        SSHD, "-D", "-e", "-f", str(config), stdout=log, stderr=log
    )

    async def listening() -> bool:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return True
        assert process.returncode is None, (directory / f"{name}.log").read_text()
        return False

    try:
        await eventually(listening, within=10, what="sshd listening")
        yield sshd
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
        log.close()


def adapter_env(sshd: Sshd, directory: Path) -> dict[str, str]:
    """An adapter that logs in to `sshd`, on an SQLite store in `directory`, for benches."""
    return {
        "FRPA_STORE": f"sqlite:///{directory / 'frpa.db'}",
        "FRPA_SSH_USER": sshd.user,
        "FRPA_SSH_KEY_FILE": str(sshd.user_key),
        "FRPA_INSECURE_NO_AUTH": "1",  # loopback only, and no token to pass around
        "FRPA_MAX_SHELLS_PER_USER": "1000",  # the memory bench holds 100 shells at once
        "FRPA_LOG_LEVEL": "WARNING",
    }

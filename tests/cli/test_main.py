from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.multipart import BadContentDispositionHeader, BadContentDispositionParam

from cli.logs import setup_logging
from cli.main import _kubeconfig
from tests.e2e.peers import Processes
from tests.support import certificate, free_port, new_proxy, settings_for


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--address", "nowhere"], {}, "--address: must be host:port"),
        ([], {"FRP_ADAPTER_ADDRESS": ":99999"}, "FRP_ADAPTER_ADDRESS: must be host:port"),
        (["serve", "--store", "mysql://x"], {}, "--store: must be kubernetes, sqlite:///"),
        ([], {"FRP_SERVER_API": "frps:7500"}, "FRP_SERVER_API: must be an http(s) URL"),
        (["--close-grace-period", "soon"], {}, "--close-grace-period: must be seconds"),
        ([], {"FRPA_PLUGIN_FAILURE_MODE": "maybe"}, "must be open or closed"),
        (["--log-level", "loud"], {}, "--log-level: must be"),
        ([], {"FRPA_LOG_FORMAT": "xml"}, "FRPA_LOG_FORMAT: must be text or json"),
        ([], {"FRPA_SSH_KEY_FILE": "/nonexistent"}, "FRPA_SSH_KEY_FILE: cannot use"),
        (["--ssh-key-file", "/etc/hostname"], {}, "as an SSH private key: Invalid private key"),
        ([], {"FRPA_SSH_KNOWN_HOSTS": "/nonexistent"}, "FRPA_SSH_KNOWN_HOSTS: [Errno 2]"),
        (["--exec-output-limit", "0"], {}, "--exec-output-limit: must be from 1 to 1073741824"),
        (
            ["--frps-servers", "a=1.2.3.4", "--frps-address", "5.6.7.8"],
            {},
            "drop FRPA_FRPS_ADDRESS",
        ),
        ([], {"FRPA_FRPS_SERVERS": "a=1.2.3.4,a=5.6.7.8"}, "names must differ"),
        ([], {"FRPA_FRPS_SERVERS": "A_B=1.2.3.4"}, "is not name=address"),
        ([], {"FRPA_API_TOKENS_FILE": "/nonexistent"}, "FRPA_API_TOKENS_FILE: cannot read"),
        ([], {"FRPA_AUDIT_LOG": "/nonexistent/audit.log"}, "FRPA_AUDIT_LOG: [Errno 2]"),
        ([], {"FRPA_SHELL_RECORDINGS": "/nonexistent"}, "is not a writable directory"),
        (
            [],
            {"FRPA_HEARTBEAT_TIMOUT": "30"},
            "FRPA_HEARTBEAT_TIMOUT is not a setting; did you mean FRPA_HEARTBEAT_TIMEOUT?",
        ),
        ([], {"FRPA_NOTHING_LIKE_IT": "1"}, "FRPA_NOTHING_LIKE_IT is not a setting"),
        ([], {"FRPA_TLS_CERT_FILE": "/etc/hostname"}, "give both, or neither"),
        (
            [],
            {"FRPA_TLS_CERT_FILE": "/etc/hostname", "FRPA_TLS_KEY_FILE": "/etc/hostname"},
            "FRPA_TLS_CERT_FILE /etc/hostname: not a PEM certificate",
        ),
        (
            [],
            {"FRPA_TLS_CERT_FILE": "/etc/hostname", "FRPA_TLS_KEY_FILE": "/nonexistent"},
            "FRPA_TLS_KEY_FILE /nonexistent: No such file or directory",
        ),
        ([], {"FRPA_TRUSTED_NETWORKS": "10.0.0.0/33"}, "FRPA_TRUSTED_NETWORKS: must be CIDRs"),
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


async def test_json_logs_carry_one_line_per_transition_with_its_fields(tmp_path: Path) -> None:
    port = free_port()
    processes = Processes(tmp_path)
    env = {
        "FRPA_STORE": f"sqlite:///{tmp_path / 'frpa.db'}",
        "FRPA_LOG_FORMAT": "json",
        "FRP_SERVER_TOKEN": "x",  # frp's own, maybe: a warning
    }
    try:
        await processes.start_adapter(port, env)
        async with aiohttp.ClientSession() as session:
            for body in (new_proxy(run_id="r9"), new_proxy(run_id="r9")):
                async with session.post(f"http://127.0.0.1:{port}/frps/handler", json=body):
                    pass
    finally:
        await processes.stop_all()
    lines = [json.loads(line) for line in processes.log("adapter").splitlines()]
    said = [(line["level"], line["message"]) for line in lines]
    assert ("INFO", f"listening on http://127.0.0.1:{port}") in said
    assert (
        "WARNING",
        "FRP_SERVER_TOKEN is not a setting; did you mean FRP_SERVER_WEBHOOK?: ignored",
    ) in said
    transitions = [line for line in lines if "to" in line]
    assert transitions == [
        {
            "time": transitions[0]["time"],
            "level": "INFO",
            "logger": "nodes.registry",
            "message": "node abc123 unknown -> online (NewProxy) run_id=r9",
            "node": "abc123",
            "from": "unknown",
            "to": "online",
            "reason": "NewProxy",
            "run_id": "r9",
        }
    ]


def test_frps_config_prints_a_plugin_block_on_a_fresh_secret_path() -> None:
    def run() -> str:
        return subprocess.run(
            [sys.executable, "-m", "cli", "frps-config", "--address", "10.0.0.5:9000"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[2],
        ).stdout

    first, second = run(), run()
    secret = re.search(r"FRPA_PLUGIN_SECRET=([-\w]{16,})", first)
    assert secret is not None
    assert f'path = "/frps/handler/{secret[1]}"' in first
    assert 'addr = "10.0.0.5:9000"' in first
    assert secret[1] not in second


def test_frps_config_gives_frps_the_plugins_own_listener_when_it_has_one() -> None:
    done = run("frps-config", "--address", "10.0.0.5:9000", "--plugin-address", "10.9.0.5:7001")
    assert done.returncode == 0, done.stderr
    assert 'addr = "10.9.0.5:7001"' in done.stdout
    assert "9000" not in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["-kubeconfig=/etc/k.conf"],
        ["-kubeconfig", "/etc/k.conf"],
        ["--kubeconfig=/etc/k.conf"],
        ["--kubeconfig", "/etc/k.conf", "serve"],
    ],
)
def test_the_originals_kubeconfig_flag_sets_kubeconfig(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert _kubeconfig(args) == [a for a in args if a == "serve"]
    assert os.environ["KUBECONFIG"] == "/etc/k.conf"


def test_an_unknown_command_is_an_error_naming_the_nearest() -> None:
    done = run("sshh", "x")
    assert done.returncode != 0
    assert "no command 'sshh'; did you mean ssh?" in done.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["ls", "--urll", "x"], "ls: error: unrecognized argument '--urll'; did you mean --url?"),
        (["exec", "--timout", "3", "n", "--", "true"], "did you mean --timeout?"),
        (["--adress", "1:2"], "serve: error: unrecognized argument '--adress'; did you mean --add"),
        (["cp", "--recursve", "a", "b"], "did you mean --recursive?"),
        (["ls", "extra"], "frp-adapter ls: error: unrecognized argument 'extra'\n"),
    ],
)  # fmt: skip
def test_an_unknown_flag_is_an_error_naming_the_nearest(args: list[str], said: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert said in done.stderr
    command = "serve" if args[0].startswith("-") else args[0]
    assert done.stderr.startswith(f"usage: frp-adapter {command} ")  # its own usage


def test_a_misspelt_variable_of_the_originals_stops_start_up() -> None:
    done = run(env={"FRP_ADAPTER_ADDR": ":9000"})
    assert done.returncode == 2
    assert "FRP_ADAPTER_ADDR is not a setting; did you mean FRP_ADAPTER_ADDRESS?" in done.stderr


def test_exec_help_says_how_words_are_joined() -> None:
    assert "joined with spaces" in run("exec", "--help").stdout


@pytest.mark.parametrize(
    ("url", "words"),
    [("ftp://host", "is not the adapter's URL"), ("http://", "is not the adapter's URL")],
)
def test_a_url_that_cannot_be_the_adapters_is_refused_in_words(url: str, words: str) -> None:
    done = run("ls", "--url", url)
    assert done.returncode == 2
    assert words in done.stderr


async def test_a_url_without_a_scheme_works_and_a_url_of_something_else_says_so(
    aiohttp_server: Any,
) -> None:
    async def dashboard(_: web.Request) -> web.Response:
        return web.Response(text='{"proxies": []} {"x": 1}', content_type="text/plain")

    app = web.Application()
    app.router.add_get("/api/v1/nodes", dashboard)
    server = await aiohttp_server(app)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "ls",
        "--url",
        f"127.0.0.1:{server.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 255
    said = stderr.decode()
    assert f"http://127.0.0.1:{server.port} answered 200 (text/plain" in said
    assert "not as frp-adapter's API does: is --url (FRPA_URL) the adapter's address?" in said
    assert "Extra data" not in said


@pytest.mark.parametrize("tls", [True, False])
async def test_a_tls_failure_is_said_in_words_not_as_an_errno(tmp_path: Path, tls: bool) -> None:
    """An https --url whose server's certificate is not trusted, or that speaks no TLS: the
    words of the TLS library, not its errno 1 read as the system's ("Operation not
    permitted") nor its source file."""
    context = None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate(tmp_path, "untrusted"))

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.drain()
            await reader.read()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", "ls", "--url", f"https://127.0.0.1:{port}",
            stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    words = "certificate verify failed: self-signed certificate" if tls else "wrong version number"
    assert (process.returncode, stderr.decode()) == (
        255,
        f"frp-adapter: cannot reach the adapter at https://127.0.0.1:{port}: "
        f"cannot connect: TLS: {words}\n",
    )


@pytest.mark.parametrize(
    "args", [("ls",), ("exec", "nodemaintenances-n1", "--", "true"), ("ssh", "nodemaintenances-n1")]
)
def test_an_adapter_that_is_not_there_is_said_in_the_systems_words(args: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    done = run(args[0], "--url", url, *args[1:])
    assert (done.returncode, done.stderr) == (
        255,
        f"frp-adapter: cannot reach the adapter at {url}: cannot connect: Connection refused\n",
    )


@pytest.mark.parametrize(
    ("command", "shown", "hidden"),
    [
        ("frps-config", "--frps-api", "--ssh-user"),
        ("frpc-config", "--local-port", "--audit-log"),
        ("ls", "--selector", "--frps-api"),
    ],
)
def test_each_commands_help_shows_its_own_flags_and_an_example(
    command: str, shown: str, hidden: str
) -> None:
    said = run(command, "--help").stdout
    assert shown in said
    assert hidden not in said
    assert f"example:\n  frp-adapter {command}" in said or "example:\n  FRPA_URL" in said


def test_a_form_parts_bad_header_is_no_warning_of_the_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp warns in the sender's words (a line break, a forged line), and each text
    would stay in the warning registry; other warnings are log records."""
    logging.captureWarnings(False)  # another test's setup, under a showwarning since restored
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        setup_logging(settings_for(tmp_path))
        warnings.warn(BadContentDispositionHeader("bogus\u2028 ERROR forged"), stacklevel=1)
        warnings.warn(BadContentDispositionParam("x\u2028y"), stacklevel=1)
        warnings.warn(RuntimeWarning("another"), stacklevel=1)
    said = [r.getMessage() for r in caplog.records if r.name == "py.warnings"]
    assert len(said) == 1
    assert "RuntimeWarning: another" in said[0]

"""schemathesis against the OpenAPI document the adapter serves: no input makes it answer
5xx or crash, and a rejected request changes nothing stored.

The adapter runs as its own process (schemathesis calls are synchronous). It has no SSH
credentials and no frps dashboard, so whatever nodes the fuzzer creates, nothing is ever
dialled: exec stops at "ssh not configured".
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.support import TOKENS, bearer, free_port, tokens_file

CASES: list[str] = []


@pytest.fixture(scope="module")
def adapter_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[2]),
        "FRP_ADAPTER_ADDRESS": f"127.0.0.1:{port}",
        "FRPA_STORE": f"sqlite:///{directory / 'frpa.db'}",
        "FRPA_API_TOKENS_FILE": str(tokens_file(directory)),
        "FRPA_LOG_LEVEL": "ERROR",
    }
    with (directory / "adapter.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, (directory / "adapter.log").read_text()
                assert time.monotonic() < deadline, "the adapter did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        print(f"\nschemathesis ran {len(CASES)} cases")
        assert process.returncode == 0, (directory / "adapter.log").read_text()


@pytest.fixture(scope="module")
def api_schema(adapter_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{adapter_url}/api/v1/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def stored(url: str) -> Any:
    return requests.get(f"{url}/api/v1/nodes", headers=bearer("read"), timeout=10).json()


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_crashes_the_adapter_or_changes_what_it_refused(
    case: Any, adapter_url: str
) -> None:
    before = stored(adapter_url)
    if case.query and "watch" in case.query:  # a watch streams until the adapter stops
        case.query["watch"] = "false"
    response = case.call(base_url=adapter_url, headers=bearer("admin"), timeout=30)
    CASES.append(case.operation.label)
    case.validate_response(response, checks=(not_a_server_error,))
    if response.status_code >= 400:
        assert stored(adapter_url) == before, (case.operation.label, response.text)


def test_the_document_is_served_to_anyone(adapter_url: str) -> None:
    document = requests.get(f"{adapter_url}/api/v1/openapi.json", timeout=10).json()
    assert document["openapi"] == "3.0.3"
    assert "/api/v1/nodes/{nm_name}/exec" in document["paths"]
    assert TOKENS["admin"] not in str(document)

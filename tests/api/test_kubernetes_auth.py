"""FRPA_KUBERNETES_AUTH: tokens reviewed by the cluster, actions allowed by its RBAC."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from cli.logs import setup_logging
from tests.kube import ACCESS_REVIEWS, TOKEN_REVIEWS, NodeMaintenanceEmulator
from tests.support import settings_for

Client = TestClient[web.Request, web.Application]
ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"


@pytest.fixture
async def client(
    tmp_path: Path, kube: NodeMaintenanceEmulator, aiohttp_client: AiohttpClient
) -> Client:
    # `kube` before `aiohttp_client`: the app must stop before its API peer does.
    kube.users = {ALICE: "alice", BOB: "bob"}
    kube.grants = {
        ("alice", "get", "", None),
        ("alice", "list", "", None),
        ("bob", "create", "exec", "nodemaintenances-allowed"),
        ("bob", "create", "shell", None),
    }
    settings = settings_for(tmp_path, store="kubernetes", kubernetes_auth=True)
    return await aiohttp_client(create_app(settings))


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_rbac_decides_reads_and_commands(client: Client) -> None:
    assert (await client.get("/api/v1/nodes", headers=as_(ALICE))).status == 200
    resp = await client.post(
        "/api/v1/nodes/nodemaintenances-allowed/exec", json={"cmd": "id"}, headers=as_(ALICE)
    )
    assert resp.status == 403
    assert (await resp.json())["details"] == (
        "alice may not create nodemaintenances/exec nodemaintenances-allowed"
    )
    # bob may exec on one node only; the unknown node answers 404 past access control.
    resp = await client.post(
        "/api/v1/nodes/nodemaintenances-allowed/exec", json={"cmd": "id"}, headers=as_(BOB)
    )
    assert resp.status == 404
    resp = await client.post(
        "/api/v1/nodes/nodemaintenances-other/exec", json={"cmd": "id"}, headers=as_(BOB)
    )
    assert resp.status == 403
    assert (await client.get("/api/v1/nodes", headers=as_(BOB))).status == 403
    assert (await client.get("/api/v1/nodes", headers=as_("stranger-0123456789"))).status == 401
    assert (await client.get("/api/v1/nodes")).status == 401


async def test_reviews_are_remembered_for_a_few_seconds(
    client: Client, kube: NodeMaintenanceEmulator
) -> None:
    for _ in range(5):
        assert (await client.get("/api/v1/nodes", headers=as_(ALICE))).status == 200
    reviews = [r for r in kube.requests if r.resource in (TOKEN_REVIEWS, ACCESS_REVIEWS)]
    assert len(reviews) == 2  # one TokenReview, one SubjectAccessReview


async def test_a_browser_shell_token_is_reviewed_too(client: Client) -> None:
    encoded = base64.urlsafe_b64encode(BOB.encode()).decode().rstrip("=")
    protocols = ("frp-adapter.v1", f"base64url.bearer.authorization.k8s.io.{encoded}")
    # Allowed, then 404: no such node (refused before any upgrade or dial).
    with pytest.raises(aiohttp.WSServerHandshakeError) as answer:
        await client.ws_connect("/api/v1/nodes/nodemaintenances-x/shell", protocols=protocols)
    assert answer.value.status == 404
    encoded = base64.urlsafe_b64encode(ALICE.encode()).decode().rstrip("=")
    protocols = ("frp-adapter.v1", f"base64url.bearer.authorization.k8s.io.{encoded}")
    with pytest.raises(aiohttp.WSServerHandshakeError) as answer:
        await client.ws_connect("/api/v1/nodes/nodemaintenances-x/shell", protocols=protocols)
    assert answer.value.status == 403


async def test_the_console_is_told_what_rbac_lets_each_caller_do(client: Client) -> None:
    answers = {}
    for name, token in (("alice", ALICE), ("bob", BOB)):
        resp = await client.get("/api/v1/access", headers=as_(token))
        answers[name] = (resp.status, (await resp.json()) if resp.status == 200 else None)
    assert answers["alice"] == (
        200,
        {
            "user": "alice",
            "may": {
                "list": True,
                "shell": False,
                "exec": False,
                "files": False,
                "sessions": False,
                "audit": False,
            },
        },
    )
    assert answers["bob"][0] == 403  # bob may not list nodes: the console has nothing to show


async def test_a_cluster_that_cannot_review_a_token_is_a_503_with_a_reason(
    client: Client, kube: NodeMaintenanceEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    kube.fail_reviews = True
    for _ in range(2):
        resp = await client.get("/api/v1/nodes", headers=as_(ALICE))
        assert resp.status == 503
        body = await resp.json()
        assert body["error"] == "cannot check the token"
        assert "TokenReview failed: HTTP 503" in body["details"]
        # The API's own words are for operators: they may name our account, or quote it.
        assert "injected fault" not in body["details"]
    said = [r.getMessage() for r in caplog.records if "injected fault" in r.getMessage()]
    assert said == ["TokenReview failed: HTTP 503 Service Unavailable: injected fault; said once"]
    assert ALICE not in caplog.text


async def test_no_log_level_logs_a_reviewed_token(
    tmp_path: Path, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The API answers a TokenReview with the token in it; the client logs answers at DEBUG."""
    setup_logging(settings_for(tmp_path, log_level="DEBUG"))
    caplog.set_level(logging.DEBUG)
    resp = await client.get("/api/v1/nodes", headers=as_(ALICE))
    assert resp.status == 200
    assert ALICE not in caplog.text

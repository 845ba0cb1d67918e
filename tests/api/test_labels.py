"""Labels through the API: frpc's declaration, an operator's merge patch, selectors on lists,
watches and batches, and a token scoped by a selector on the original's routes too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.metrics import LABEL_VALUES
from tests.api.test_watch import next_event
from tests.support import bearer, new_proxy, settings_for, tokens_file

Client = TestClient[web.Request, web.Application]
SCOPED = {"Authorization": "Bearer sh-admin-token-0123456789"}


def labelled(name: str, uid: str, labels: str, port: int) -> dict[str, Any]:
    body = new_proxy(name, uid, port=port)
    body["content"]["user"]["metas"]["labels"] = labels
    return body


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: AiohttpClient) -> Client:
    tokens = tmp_path / "scoped-tokens"
    scoped = f"{SCOPED['Authorization'].removeprefix('Bearer ')} sh-admins admin site=sh\n"
    tokens.write_text(tokens_file(tmp_path).read_text() + scoped)
    app = create_app(settings_for(tmp_path, api_tokens_file=str(tokens)))
    client = await aiohttp_client(app)
    for uid, labels, port in (("sh1", "site=sh", 1), ("bj1", "site=bj", 2), ("x1", "a b=c", 3)):
        assert (await client.post("/frps/handler", json=labelled(uid, uid, labels, port))).ok
    return client


async def names(client: Client, headers: dict[str, str], **query: str) -> list[str]:
    resp = await client.get("/api/v1/nodes", params=query, headers=headers)
    assert resp.status == 200, await resp.text()
    return [item["metadata"]["name"] for item in (await resp.json())["items"]]


def nm(uid: str) -> str:
    return f"nodemaintenances-{uid}"


async def test_a_malformed_label_is_skipped_and_counted_and_the_node_let_in(
    client: Client,
) -> None:
    obj = await (await client.get(f"/api/v1/nodes/{nm('x1')}", headers=bearer("read"))).json()
    assert obj["metadata"].get("labels") is None
    assert obj["status"]["services"][0]["status"] == "online"
    metrics = await (await client.get("/metrics")).text()
    assert "frpa_node_labels_skipped_total 1.0" in metrics


async def test_a_merge_patch_sets_and_removes_labels_and_is_stored(client: Client) -> None:
    url = f"/api/v1/nodes/{nm('sh1')}"
    patch = {"metadata": {"labels": {"team": "edge", "site": None}}}
    resp = await client.patch(url, json=patch, headers=bearer("admin"))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["metadata"]["labels"] == {"team": "edge"}
    assert await names(client, bearer("read"), labelSelector="team=edge,!site") == [nm("sh1")]
    # The frpc logs in again declaring what it did: the operator's edit stays.
    await client.post("/frps/handler", json=labelled("sh1", "sh1", "site=sh", 1))
    assert await names(client, bearer("read"), labelSelector="team=edge,!site") == [nm("sh1")]
    for body, status in (
        ({"metadata": {"labels": {"bad key": "x"}}}, 400),
        ({"metadata": {"labels": {"k": "v" * 64}}}, 400),
        ({"metadata": {"name": "x"}}, 400),
        ({"labels": {}}, 400),
    ):
        resp = await client.patch(url, json=body, headers=bearer("admin"))
        assert resp.status == status, await resp.text()
    assert (await client.patch(url, json=patch, headers=bearer("operator"))).status == 403
    unknown = f"/api/v1/nodes/{nm('nobody')}"
    assert (await client.patch(unknown, json=patch, headers=bearer("admin"))).status == 404


async def test_selectors_that_cannot_be_read_are_refused_with_where(client: Client) -> None:
    for query, words in (
        ({"labelSelector": "site in (a"}, "labelSelector at character 11 (the end)"),
        ({"fieldSelector": "status=up"}, "fieldSelector at character 1"),
        ({"fieldSelector": "frps=elsewhere"}, "no frps is named 'elsewhere' (known: default)"),
    ):
        resp = await client.get("/api/v1/nodes", params=query, headers=bearer("read"))
        assert resp.status == 400
        body = await resp.json()
        assert body["error"] == "invalid selector"
        assert words in body["details"]
    resp = await client.post("/api/v1/exec", json={"cmd": "true"}, headers=bearer("operator"))
    assert resp.status == 400
    assert "labelSelector" in await resp.text()


async def test_a_watch_of_one_node_by_its_name_tells_only_its_changes(client: Client) -> None:
    query = {"watch": "true", "fieldSelector": f"metadata.name={nm('bj1')}"}
    async with client.get("/api/v1/nodes", params=query, headers=bearer("read")) as resp:
        first = await next_event(resp.content)
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", nm("bj1"))
        await client.post("/frps/handler", json=labelled("sh1", "sh1", "site=hz", 1))
        await client.post("/frps/handler", json=labelled("bj1", "bj1", "site=sh", 2))
        changed = await next_event(resp.content)
        assert (changed["type"], changed["object"]["metadata"]["name"]) == ("MODIFIED", nm("bj1"))


async def test_a_watch_adds_a_node_that_comes_to_match_and_deletes_one_that_stops(
    client: Client,
) -> None:
    query = {"watch": "true", "labelSelector": "site=sh"}
    async with client.get("/api/v1/nodes", params=query, headers=bearer("read")) as resp:
        first = await next_event(resp.content)
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", nm("sh1"))
        await client.post("/frps/handler", json=labelled("bj1", "bj1", "site=sh", 2))
        joined = await next_event(resp.content)
        assert (joined["type"], joined["object"]["metadata"]["name"]) == ("ADDED", nm("bj1"))
        await client.post("/frps/handler", json=labelled("sh1", "sh1", "site=hz", 1))
        left = await next_event(resp.content)
        assert (left["type"], left["object"]["metadata"]["name"]) == ("DELETED", nm("sh1"))


async def test_a_scoped_token_changes_only_its_nodes_on_the_originals_routes(
    client: Client,
) -> None:
    assert await names(client, SCOPED) == [nm("sh1")]
    form = {"frp_server_ip_address": "1.2.3.4", "unique_id": "bj1", "port": "9"}
    resp = await client.put("/frp_update", data=form, headers=SCOPED)
    assert resp.status == 404, await resp.text()
    assert json.loads(await resp.text())["code"] == 404
    resp = await client.post("/frp_create", data={**form, "unique_id": "new1"}, headers=SCOPED)
    assert resp.status == 404
    assert (await client.get(f"/frp_fetch/{nm('bj1')}", headers=SCOPED)).status == 404
    assert (await client.put("/frp_update", data={**form, "unique_id": "sh1"}, headers=SCOPED)).ok
    assert (await client.put("/nm_useless", headers=SCOPED)).ok
    offline = await names(client, bearer("read"), fieldSelector="status=offline")
    assert offline == [nm("sh1")]


async def test_no_label_series_unless_asked_and_then_at_most_100_values_a_key(
    tmp_path: Path, aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    for each in ("a", "b"):
        (tmp_path / each).mkdir()
    plain = await aiohttp_client(create_app(settings_for(tmp_path / "a")))
    await plain.post("/frps/handler", json=labelled("n1", "n1", "site=sh", 1))
    assert "frpa_nodes_by_label" not in await (await plain.get("/metrics")).text()

    app = create_app(settings_for(tmp_path / "b", metric_labels=("site", "env")))
    client = await aiohttp_client(app)
    for i in range(LABEL_VALUES + 2):  # one value more than shown, and one node more
        labels = f"site=s{min(i, LABEL_VALUES):03},env=prod"
        await client.post("/frps/handler", json=labelled(f"n{i}", f"n{i}", labels, 1000 + i))
    series = {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in (await (await client.get("/metrics")).text()).splitlines()
        if line.startswith("frpa_nodes_by_label{")
    }
    assert series['frpa_nodes_by_label{key="env",status="online",value="prod"}'] == LABEL_VALUES + 2
    site = {name: count for name, count in series.items() if 'key="site"' in name}
    assert len(site) == LABEL_VALUES + 1
    assert site['frpa_nodes_by_label{key="site",status="online",value="s100"}'] == 2
    assert sum(site.values()) == LABEL_VALUES + 2
    assert "label site has 101 values" in caplog.text

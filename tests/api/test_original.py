"""Drop-in for the original frp_adapter's callers (ttlv/frp_adapter, branch http; the
patched frps of ttlv/frp; browser consoles), on a real SQLite store: each route called
the ways they call it, answering with the original's status, envelope and words."""

from __future__ import annotations

import argparse
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from schemas.settings import SettingsError, load_settings
from tests.support import settings_for

Client = TestClient[web.Request, web.Application]
CREATE = {"frp_server_ip_address": "198.51.100.1", "unique_id": "abc123", "port": "16022"}


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(create_app(settings_for(tmp_path)))


async def fetch(
    client: Client, name: str = "nodemaintenances-abc123", **params: str
) -> tuple[int, Any]:
    resp = await client.get(f"/frp_fetch/{name}", params=params)
    return resp.status, await resp.json()


async def everything(client: Client) -> Any:
    resp = await client.get("/api/v1/nodes")
    assert resp.status == 200
    return await resp.json()


async def test_home_answers_as_the_original(client: Client) -> None:
    resp = await client.get("/")
    assert await resp.json() == {"code": 200, "data": "Frp Adapter Is Working Now...."}


async def test_healthz(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200


@pytest.mark.parametrize("how", ["query", "form", "json", "query with empty json body"])
async def test_frp_create_takes_its_parameters_every_way_the_original_was_called(
    client: Client, how: str
) -> None:
    if how == "query":
        resp = await client.post("/frp_create", params=CREATE)
    elif how == "form":
        resp = await client.post("/frp_create", data=CREATE)
    elif how == "json":
        resp = await client.post("/frp_create", json={**CREATE, "port": 16022})
    else:
        resp = await client.post(
            "/frp_create", params=CREATE, headers={"Content-Type": "application/json"}
        )
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "code": 200,
        "data": "create nodemaintenances-abc123 crd resource in k8s cluster successfully",
    }
    assert await fetch(client) == (
        200,
        {
            "code": 200,
            "data": {
                "frp_server_ip_address": "198.51.100.1",
                "proxy_port": "16022",
                "status": "online",
            },
        },
    )


async def test_frp_create_records_mac_address_and_host_name(client: Client) -> None:
    params = {**CREATE, "mac_address": "52:54:00:12:34:56", "host_name": "edge-1"}
    resp = await client.post("/frp_create", data=params)
    assert resp.status == 200
    resp = await client.get("/api/v1/nodes/nodemaintenances-abc123")
    spec = (await resp.json())["spec"]
    assert (spec["macAddress"], spec["hostName"]) == ("52:54:00:12:34:56", "edge-1")


async def test_frp_update_creates_a_missing_node_then_updates_it(client: Client) -> None:
    resp = await client.put("/frp_update", params={**CREATE, "status": "offline"})
    assert await resp.json() == {"code": 200, "data": "Update Successfully"}
    assert (await fetch(client))[1]["data"]["status"] == "offline"
    resp = await client.put(
        "/frp_update", data={"unique_id": "abc123", "status": "online", "port": "16030"}
    )
    assert resp.status == 200
    data = (await fetch(client))[1]["data"]
    assert data == {
        "frp_server_ip_address": "198.51.100.1",
        "proxy_port": "16030",
        "status": "online",
    }


async def test_frp_update_never_overwrites_the_bind_status_another_controller_owns(
    client: Client, tmp_path: Path
) -> None:
    await client.post("/frp_create", data=CREATE)
    with closing(sqlite3.connect(tmp_path / "frpa.db", isolation_level=None)) as other_controller:
        (body,) = other_controller.execute("SELECT body FROM nodemaintenances").fetchone()
        obj = json.loads(body)
        obj["status"]["bindStatus"] = {"phase": "Bound", "nodeDeploymentReference": "nd-1"}
        other_controller.execute("UPDATE nodemaintenances SET body = ?", (json.dumps(obj),))
    await client.put("/frp_update", data={"unique_id": "abc123", "status": "offline"})
    with closing(sqlite3.connect(tmp_path / "frpa.db", isolation_level=None)) as db:
        (body,) = db.execute("SELECT body FROM nodemaintenances").fetchone()
    status = json.loads(body)["status"]
    assert status["bindStatus"]["phase"] == "Bound"
    assert status["services"][0]["status"] == "offline"


async def test_nm_useless_marks_every_node_offline(client: Client) -> None:
    for uid in ("a1", "b2", "c3"):
        await client.post("/frp_create", data={**CREATE, "unique_id": uid})
    resp = await client.put("/nm_useless")
    assert await resp.json() == {
        "code": 200,
        "data": "make all nodemaintenances objects become useless successfully",
    }
    resp = await client.get("/api/v1/nodes", params={"status": "online"})
    assert (await resp.json())["items"] == []
    resp = await client.get("/api/v1/nodes", params={"status": "offline"})
    assert len((await resp.json())["items"]) == 3


async def test_frp_fetch_of_an_unknown_node_is_404_as_the_original(client: Client) -> None:
    assert await fetch(client, "nodemaintenances-nope") == (
        404,
        {
            "code": 404,
            "error": {
                "message": "failed to get latest version of nodeMaintenance: "
                'nodemaintenances.edge.harmonycloud.cn "nodemaintenances-nope" not found'
            },
        },
    )


BAD_CREATES: list[tuple[str, dict[str, str], str]] = [
    ("missing unique_id", {"frp_server_ip_address": "1.2.3.4", "port": "1"}, "unique_id"),
    ("port not a number", {**CREATE, "port": "ssh"}, "port"),
    ("port out of range", {**CREATE, "port": "70000"}, "port"),
    ("invalid unique_id", {**CREATE, "unique_id": "UPPER_case"}, "unique_id"),
]


@pytest.mark.parametrize(
    ("params", "word"), [(p, w) for _, p, w in BAD_CREATES], ids=[i for i, _, _ in BAD_CREATES]
)
async def test_bad_rest_input_is_a_400_and_stores_nothing(
    client: Client, params: dict[str, str], word: str
) -> None:
    await client.post("/frp_create", data={**CREATE, "unique_id": "keep"})
    before = await everything(client)
    resp = await client.post("/frp_create", data=params)
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == 400
    assert word in body["error"]["message"]
    assert await everything(client) == before


@pytest.mark.parametrize(
    ("body", "headers", "word"),
    [
        (b"{broken", {"Content-Type": "application/json"}, "not valid JSON"),
        (b"[1]", {"Content-Type": "application/json"}, "must be an object"),
        (b"x=1", {"Content-Type": "text/plain"}, "unsupported Content-Type"),
    ],
)
async def test_bad_rest_bodies_are_a_400(
    client: Client, body: bytes, headers: dict[str, str], word: str
) -> None:
    resp = await client.put("/frp_update", data=body, headers=headers)
    assert resp.status == 400
    assert word in (await resp.json())["error"]["message"]
    assert (await everything(client))["items"] == []


def _multipart(part_headers: str) -> tuple[bytes, dict[str, str]]:
    body = (
        f'--XX\r\nContent-Disposition: form-data; name="unique_id"\r\n{part_headers}\r\n'
        "abc123\r\n--XX--\r\n"
    )
    return body.encode(), {"Content-Type": "multipart/form-data; boundary=XX"}


_FORM = "application/x-www-form-urlencoded"
_IN_UTF7 = b"unique_id=abc123&port=16022&frp_server_ip_address=%2B2AA-"  # "\ud800"


@pytest.mark.parametrize(
    ("body", "headers", "word"),
    [
        (_IN_UTF7, {"Content-Type": f"{_FORM}; charset=nosuch"}, "unknown encoding"),
        (_IN_UTF7, {"Content-Type": f"{_FORM}; charset=base64"}, "not a text encoding"),
        (_IN_UTF7, {"Content-Type": f"{_FORM}; charset=utf-7"}, "half of a surrogate pair"),
        (*_multipart("Content-Transfer-Encoding: bogus\r\n"), "transfer encoding"),
        (*_multipart("Content-Type: text/plain; charset=nosuch\r\n"), "unknown encoding"),
        (*_multipart("X-Pad: 1\r\n" * 5000), "headers"),
        (
            (
                f'--{"B" * 40}\r\nContent-Disposition: form-data; name="_charset_"\r\n\r\n'
                f"utf-8\r\n--{'B' * 40}--\r\n"
            ).encode(),
            {"Content-Type": f"multipart/form-data; boundary={'B' * 40}"},
            "the form body cannot be read",
        ),
    ],
    ids=[
        "unknown charset",
        "charset not of text",
        "surrogate in utf-7",
        "unknown transfer encoding",
        "unknown charset of a part",
        "too many part headers",
        "a _charset_ part past a long boundary",
    ],
)
async def test_a_form_that_cannot_be_read_or_stored_is_a_400_and_stores_nothing(
    client: Client, body: bytes, headers: dict[str, str], word: str
) -> None:
    """A stored half of a surrogate pair made every /metrics and frp_fetch answer a 500."""
    resp = await client.post("/frp_create", data=body, headers=headers)
    assert resp.status == 400, await resp.text()
    assert word in (await resp.json())["error"]["message"]
    assert (await everything(client))["items"] == []
    assert (await client.get("/metrics")).status == 200


async def test_frp_update_takes_any_status_but_online_as_offline_and_none_as_no_change(
    client: Client,
) -> None:
    await client.post("/frp_create", data=CREATE)
    resp = await client.put("/frp_update", data={**CREATE, "status": "sleeping"})
    assert await resp.json() == {"code": 200, "data": "Update Successfully"}
    assert (await fetch(client))[1]["data"]["status"] == "offline"
    await client.put("/frp_update", data={**CREATE, "status": "online"})
    resp = await client.put("/frp_update", data={"unique_id": "abc123"})  # no status
    assert await resp.json() == {"code": 200, "data": "Update Successfully"}
    assert (await fetch(client))[1]["data"]["status"] == "online"


async def test_parameters_the_original_did_not_read_are_ignored_as_gin_did(
    client: Client,
) -> None:
    resp = await client.post("/frp_create", data={**CREATE, "colour": "red", "_": "1700000"})
    assert resp.status == 200, await resp.text()
    resp = await client.put("/frp_update", params={"unique_id": "abc123", "t": "1"})
    assert resp.status == 200
    assert (await fetch(client, "nodemaintenances-abc123", cache_buster="1"))[0] == 200


async def test_multipart_forms_are_read_as_the_original_read_them(client: Client) -> None:
    form = aiohttp.FormData({**CREATE}, default_to_multipart=True)
    resp = await client.post("/frp_create", data=form)
    assert resp.status == 200, await resp.text()
    assert (await fetch(client))[1]["data"]["proxy_port"] == "16022"


@pytest.mark.parametrize(
    ("method", "path", "status", "location"),
    [
        ("GET", "/frp_fetch/nodemaintenances-abc123/", 301, "/frp_fetch/nodemaintenances-abc123"),
        ("PUT", "/frp_update/?unique_id=abc123", 307, "/frp_update?unique_id=abc123"),
        ("POST", "/frp_create/", 307, "/frp_create"),
        ("GET", "/no_such_route/", 404, None),
    ],
)
async def test_a_trailing_slash_is_redirected_as_gin_does(
    client: Client, method: str, path: str, status: int, location: str | None
) -> None:
    async with client.request(method, path, allow_redirects=False) as resp:
        assert resp.status == status
        assert resp.headers.get("Location") == location


async def test_the_api_group_path_answers_as_home(client: Client) -> None:
    resp = await client.get("/apis/edge.harmonycloud.cn/v1alpha1")
    assert await resp.json() == {"code": 200, "data": "Frp Adapter Is Working Now...."}


async def test_v1_rejects_an_unknown_status_filter(client: Client) -> None:
    resp = await client.get("/api/v1/nodes", params={"status": "maybe"})
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid query"
    assert "status" in body["details"]


async def test_v1_unknown_node_is_404(client: Client) -> None:
    resp = await client.get("/api/v1/nodes/nodemaintenances-nope")
    assert resp.status == 404
    assert await resp.json() == {"error": "not found", "details": {"name": "nodemaintenances-nope"}}


# main/main.go:20-54 (branch http): `Cors`, word for word.
ORIGINAL_CORS = {
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE,UPDATE",
    "Access-Control-Allow-Headers": "Authorization, Content-Length, X-CSRF-Token, Token,"
    "session,X_Requested_With,Accept, Origin, Host, Connection, Accept-Encoding, "
    "Accept-Language,DNT, X-CustomHeader, Keep-Alive, User-Agent, X-Requested-With, "
    "If-Modified-Since, Cache-Control, Content-Type, Pragma",
    "Access-Control-Expose-Headers": "Content-Length, Access-Control-Allow-Origin, "
    "Access-Control-Allow-Headers,Cache-Control,Content-Language,Content-Type,Expires,"
    "Last-Modified,Pragma,FooBar",
    "Access-Control-Max-Age": "172800",
    "Access-Control-Allow-Credentials": "false",
}


async def test_preflights_and_answers_carry_cors_headers_for_allowed_origins_only(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    console = "https://console.example"
    client = await aiohttp_client(
        create_app(settings_for(tmp_path, allowed_origins=frozenset({console})))
    )
    preflight = {
        "Origin": console,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "x-requested-with, token",
    }
    resp = await client.options("/frp_update", headers=preflight)
    assert resp.status == 200
    assert await resp.read() == b'"Options Request!"'
    assert resp.headers["Access-Control-Allow-Origin"] == console
    assert {k: resp.headers[k] for k in ORIGINAL_CORS} == ORIGINAL_CORS
    resp = await client.get("/frp_fetch/nodemaintenances-nope", headers={"Origin": console})
    assert resp.status == 404  # a refusal, readable by the console too
    assert resp.headers["Access-Control-Allow-Origin"] == console
    elsewhere = {**preflight, "Origin": "https://elsewhere.example"}
    resp = await client.options("/frp_update", headers=elsewhere)
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.get("/", headers={"Origin": "https://elsewhere.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_any_origin_with_a_star_as_the_original_and_never_with_credentials(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    """main/main.go:35-44: `Access-Control-Allow-Origin: *` for any Origin; every OPTIONS
    answered 200 `"Options Request!"` (main.go:48-50)."""
    client = await aiohttp_client(
        create_app(settings_for(tmp_path, allowed_origins=frozenset({"*"})))
    )
    for origin in ("https://anywhere.example", "http://10.0.0.9:3000", "null"):
        resp = await client.options("/frp_fetch/nodemaintenances-x", headers={"Origin": origin})
        assert (resp.status, await resp.read()) == (200, b'"Options Request!"')
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert resp.headers["Access-Control-Allow-Credentials"] == "false"
        resp = await client.get("/", headers={"Origin": origin})
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "Vary" not in resp.headers


@pytest.mark.parametrize(
    "value", ["https://console.example/app", "console.example", "https://a.example,ftp://b"]
)
def test_a_malformed_allowed_origin_stops_start_up(value: str) -> None:
    with pytest.raises(SettingsError, match=r"FRPA_ALLOWED_ORIGINS: .* is not an origin"):
        load_settings(argparse.Namespace(), {"FRPA_ALLOWED_ORIGINS": value})


async def test_answers_are_the_bytes_go_writes(client: Client) -> None:
    """app/helpers/helpers.go:11-24 write entries.Success / entries.Error with gin's
    c.JSON: Go's encoding/json, compact, raw UTF-8, `<` `>` `&` escaped."""
    resp = await client.get("/")
    assert await resp.read() == b'{"code":200,"data":"Frp Adapter Is Working Now...."}'
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    resp = await client.get("/frp_fetch/nodemaintenances-<b>&\u4e2d\u6587")
    assert resp.status == 404
    assert (
        await resp.read()
        == (
            '{"code":404,"error":{"message":"failed to get latest version of nodeMaintenance: '
            'nodemaintenances.edge.harmonycloud.cn \\"nodemaintenances-\\u003cb\\u003e\\u0026'
            '\u4e2d\u6587\\" not found"}}'
        ).encode()
    )
    form = {"frp_server_ip_address": "1.2.3.4", "unique_id": "abc123", "port": "6006"}
    assert (await client.post("/frp_create", data=form)).status == 200
    resp = await client.get("/frp_fetch/nodemaintenances-abc123")
    assert await resp.read() == (
        b'{"code":200,"data":{"frp_server_ip_address":"1.2.3.4","proxy_port":"6006",'
        b'"status":"online"}}'
    )


async def test_frp_create_takes_what_the_original_took(client: Client) -> None:
    """app/action/frp/frp_action.go:31-48: every field as c.PostForm gives it, "" when
    absent; a port no dial could use is refused in the words its failure had."""
    resp = await client.post("/frp_create", data={"unique_id": "bare1"})
    assert resp.status == 200, await resp.text()
    obj = await (await client.get("/api/v1/nodes/nodemaintenances-bare1")).json()
    service = obj["spec"]["services"][0]
    assert (service["frpServerIpAddress"], service["proxyPort"]) == ("", "")
    status, body = await fetch(client, "nodemaintenances-bare1")
    assert (status, body["data"]["proxy_port"]) == (200, "")
    resp = await client.post("/frp_create", data={"unique_id": "bare2", "port": "70000"})
    assert resp.status == 400
    message = (await resp.json())["error"]["message"]
    assert message.startswith("can't create nodemaintenances crd resource in k8s cluster,err is:")
    assert "port" in message
    resp = await client.put("/frp_update", data={"unique_id": "bare1", "port": "x"})
    assert (await resp.json())["error"]["message"].startswith("update failed: port")

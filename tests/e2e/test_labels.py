"""Labels from real frpc 0.65 through real frps: selectors choose nodes, a token scoped by
a selector sees and reaches only its nodes, and an edit made with a Kubernetes client
outlives the frpc's reconnection."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config
from playwright.async_api import Browser

from tests.cli.test_main import run
from tests.e2e.peers import FrpSetup, kubernetes_frp, node_online, sshd_behind_frps
from tests.e2e.test_console import signed_in
from tests.support import TOKENS, bearer, eventually, tokens_file

pytestmark = pytest.mark.e2e

LABELS = {"sh": "site=sh,env=prod", "bj": "site=bj,env=prod", "none": ""}
SCOPED = {"Authorization": "Bearer sh-team-token-0123456789"}


def nm(node: str) -> str:
    return f"nodemaintenances-edge-{node}"


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[FrpSetup]:
    """Three nodes on one real sshd; the tokens of tests.support, and one scoped to site=sh."""
    tokens = tmp_path / "scoped-tokens"
    scoped = f"{SCOPED['Authorization'].removeprefix('Bearer ')} sh-team operator site=sh\n"
    tokens.write_text(tokens_file(tmp_path).read_text() + scoped)
    async with sshd_behind_frps(tmp_path, FRPA_API_TOKENS_FILE=str(tokens)) as (frp, sshd):
        for node, labels in LABELS.items():
            frp.start_frpc(f"edge-{node}", f"edge-{node}", local_port=sshd.port, labels=labels)
        for node in LABELS:
            await node_online(frp, nm(node))
            # frps's dashboard may show a node before its NewProxy, with it its labels, is
            # confirmed: the fixture is ready once every node carries its frpc's labels.
            await eventually(partial(labelled, frp, node), within=30, what=f"{node}'s labels")
        yield frp


async def labelled(frp: FrpSetup, node: str) -> bool:
    async with (
        aiohttp.ClientSession(headers=bearer("read")) as session,
        session.get(f"{frp.adapter_url}/api/v1/nodes/{nm(node)}") as resp,
    ):
        declared = (await resp.json())["status"].get("frpcLabels")
    return bool(declared == ",".join(sorted(filter(None, LABELS[node].split(",")))))


async def listed(frp: FrpSetup, headers: dict[str, str], **query: str) -> list[str]:
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{frp.adapter_url}/api/v1/nodes", params=query) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return [item["metadata"]["name"] for item in (await resp.json())["items"]]


async def test_selectors_choose_and_a_scoped_token_reaches_only_its_nodes(
    fleet: FrpSetup,
) -> None:
    frp, url = fleet, fleet.adapter_url
    async with aiohttp.ClientSession(headers=bearer("admin")) as session:
        for node, labels in LABELS.items():
            async with session.get(f"{url}/api/v1/nodes/{nm(node)}") as resp:
                obj = await resp.json()
            expected = dict(item.split("=") for item in labels.split(",") if item)
            assert obj["metadata"].get("labels", {}) == expected
            assert obj["status"]["frpcLabels"] == ",".join(
                f"{key}={value}" for key, value in sorted(expected.items())
            )
        async with session.get(
            f"{url}/api/v1/nodes", params={"labelSelector": "site in (sh"}
        ) as resp:
            assert resp.status == 400
            assert "at character 12 (the end)" in (await resp.json())["details"]

    read = bearer("read")
    assert await listed(frp, read, labelSelector="site=sh") == [nm("sh")]
    assert await listed(frp, read, labelSelector="env=prod,site notin (sh)") == [nm("bj")]
    assert await listed(frp, read, labelSelector="!site") == [nm("none")]
    assert await listed(frp, read, fieldSelector="status=online,frps=default") == sorted(
        nm(node) for node in LABELS
    )
    assert await listed(frp, SCOPED) == [nm("sh")]
    assert await listed(frp, SCOPED, labelSelector="env=prod") == [nm("sh")]

    # A batch by selector runs on exactly the online nodes it chooses.
    async with (
        aiohttp.ClientSession(headers=bearer("operator")) as session,
        session.post(
            f"{url}/api/v1/exec", json={"cmd": "echo ran", "labelSelector": "env=prod"}
        ) as resp,
    ):
        lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert sorted(line["node"] for line in lines) == [nm("bj"), nm("sh")]
    assert {line["stdout"] for line in lines} == {"ran\n"}

    # The scoped token: its own node as any operator has it, the others as if unknown.
    async with aiohttp.ClientSession(headers=SCOPED) as session:
        async with session.post(
            f"{url}/api/v1/nodes/{nm('sh')}/exec", json={"cmd": "true"}
        ) as resp:
            assert resp.status == 200, await resp.text()
        for node in ("bj", "none"):
            for method, path, query in (
                ("GET", "", {}),
                ("POST", "/exec", {}),
                ("GET", "/shell", {}),
                ("GET", "/files", {"path": "/etc/hostname"}),
                ("GET", "/portforward", {"port": "22"}),
            ):
                async with session.request(
                    method,
                    f"{url}/api/v1/nodes/{nm(node)}{path}",
                    params=query,
                    json={"cmd": "true"} if method == "POST" else None,
                ) as resp:
                    assert resp.status == 404, (node, path, await resp.text())
            async with session.post(
                f"{url}/api/v1/exec", json={"cmd": "true", "nodes": [nm(node)]}
            ) as resp:
                (line,) = [json.loads(line) for line in (await resp.text()).splitlines()]
                assert line["error"] == "not found"
        async with session.post(
            f"{url}/api/v1/exec", json={"cmd": "true", "labelSelector": "env=prod"}
        ) as resp:
            assert [json.loads(line)["node"] for line in (await resp.text()).splitlines()] == [
                nm("sh")
            ]

    # Its watch shows its node, and none of the others' changes.
    async with (
        aiohttp.ClientSession(headers=SCOPED) as scoped,
        scoped.get(f"{url}/api/v1/nodes", params={"watch": "true"}) as watch,
        aiohttp.ClientSession(headers=bearer("admin")) as admin,
    ):
        seen: list[dict[str, Any]] = []

        async def next_event() -> dict[str, Any]:
            while True:
                event = json.loads(await watch.content.readline())
                if event["type"] != "BOOKMARK":
                    seen.append(event)
                    return dict(event)

        assert (await next_event())["object"]["metadata"]["name"] == nm("sh")
        frp.processes.running["edge-bj"].terminate()  # bj goes offline: not for its eyes

        async def bj_offline() -> bool:
            async with admin.get(f"{url}/api/v1/nodes/{nm('bj')}") as resp:
                obj = await resp.json()
            return bool(obj["status"]["services"][0]["status"] == "offline")

        await eventually(bj_offline, within=30, what="edge-bj offline")
        patch = {"metadata": {"labels": {"team": "edge"}}}
        async with admin.patch(f"{url}/api/v1/nodes/{nm('sh')}", json=patch) as resp:
            assert resp.status == 200, await resp.text()
        event = await next_event()
        assert (event["type"], event["object"]["metadata"]["name"]) == ("MODIFIED", nm("sh"))
        assert event["object"]["metadata"]["labels"]["team"] == "edge"
    assert {event["object"]["metadata"]["name"] for event in seen} == {nm("sh")}


async def test_a_label_set_with_a_kubernetes_client_outlives_the_frpcs_reconnection(
    tmp_path: Path,
) -> None:
    async with kubernetes_frp(tmp_path) as (kube, frp):
        processes = frp.processes
        await frp.start_adapter(FRPA_API_TOKENS_FILE=str(tokens_file(tmp_path)))
        await frp.start_frps()
        frp.start_frpc("edge-sh", "edge-sh", labels=LABELS["sh"])
        await node_online(frp, nm("sh"))
        api = await config.new_client_from_config(frp.store_env["KUBECONFIG"])
        async with api:
            objects = client.CustomObjectsApi(api)
            await objects.patch_cluster_custom_object(
                "edge.harmonycloud.cn",
                "v1alpha1",
                "nodemaintenances",
                nm("sh"),
                {"metadata": {"labels": {"site": "hz", "team": "edge"}}},
                _content_type="application/merge-patch+json",  # type: ignore[call-arg]
            )
        edited = {"env": "prod", "site": "hz", "team": "edge"}

        async def adapter_sees(labels: dict[str, str]) -> bool:
            async with (
                aiohttp.ClientSession(headers=bearer("read")) as session,
                session.get(f"{frp.adapter_url}/api/v1/nodes/{nm('sh')}") as resp,
            ):
                return bool((await resp.json())["metadata"].get("labels") == labels)

        await eventually(lambda: adapter_sees(edited), within=30, what="the edit seen")
        before = kube.node_maintenances()[nm("sh")]["status"]["runId"]
        await processes.stop("edge-sh")
        frp.start_frpc("edge-sh", "edge-sh", labels=LABELS["sh"])

        async def reconnected() -> bool:
            status = kube.node_maintenances()[nm("sh")]["status"]
            return bool(status["runId"] != before and status["services"][0]["status"] == "online")

        await eventually(reconnected, within=30, what="edge-sh back with a new run_id")
        assert kube.node_maintenances()[nm("sh")]["metadata"]["labels"] == edited
        assert await adapter_sees(edited)
        # Its frpc declares anew: only the keys it declares, or declared, change.
        await processes.stop("edge-sh")
        frp.start_frpc("edge-sh", "edge-sh", labels="site=bj")
        declared = {"site": "bj", "team": "edge"}
        await eventually(lambda: adapter_sees(declared), within=30, what="the new labels")

        async def stored() -> bool:
            return bool(kube.node_maintenances()[nm("sh")]["metadata"]["labels"] == declared)

        await eventually(stored, within=30, what="the new labels stored")


async def test_the_cli_lists_runs_and_copies_by_selector(fleet: FrpSetup, tmp_path: Path) -> None:
    env = {"FRPA_URL": fleet.adapter_url, "FRPA_TOKEN": TOKENS["operator"]}
    listed = run("ls", "-l", "env=prod", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NAME", "STATUS", "SINCE", "LABELS"]
    assert [(row[0], row[1], row[-1]) for row in rows[1:]] == [
        (nm("bj"), "online", "env=prod,site=bj"),
        (nm("sh"), "online", "env=prod,site=sh"),
    ]
    ran = run("exec", "-l", "site notin (bj)", "--", "echo", "on", "$((6*7))", env=env)
    assert ran.returncode == 0, ran.stderr
    assert sorted(ran.stdout.split("== ")[1:]) == [
        f"{nm('none')} (exit 0)\non 42\n",
        f"{nm('sh')} (exit 0)\non 42\n",
    ]
    assert run("exec", "-l", "site=sh", "--", "exit 3", env=env).returncode == 1
    refused = run("exec", "-l", "site in (", "--", "true", env=env)
    assert refused.returncode == 255
    assert "invalid selector: labelSelector at character 10 (the end)" in refused.stderr
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(300_000))
    target = tmp_path / "copied"
    target.mkdir()
    copied = run("cp", "-l", "env=prod", str(source), f":{target}/", env=env)
    assert copied.returncode == 0, copied.stderr
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert sorted(line.split(": ")[0] for line in copied.stdout.splitlines()) == [
        nm("bj"),
        nm("sh"),
    ]
    assert all(
        line.endswith(f"300000 bytes sha256 {digest}") for line in copied.stdout.splitlines()
    )
    assert hashlib.sha256((target / "payload.bin").read_bytes()).hexdigest() == digest


async def test_the_console_shows_labels_chooses_by_selector_and_runs_on_its_nodes(
    fleet: FrpSetup, browser: Browser, console_built: None
) -> None:
    page = await signed_in(browser, fleet, "operator")
    row = '.spacer .row[data-node="{}"]'
    for node in LABELS:
        await page.wait_for_selector(row.format(nm(node)), timeout=30000)
    chips = await page.locator(f"{row.format(nm('sh'))} .chip").all_inner_texts()
    assert chips == ["env=prod", "site=sh"]
    assert await page.locator(f"{row.format(nm('none'))} .chip").count() == 0

    await page.fill("#selector", "site in (sh")
    await page.press("#selector", "Enter")
    await page.wait_for_selector("#selector-refused:text('at character 12')")
    assert await page.locator(".spacer .row").count() == 0

    await page.fill("#selector", "env=prod,site notin (sh)")
    await page.press("#selector", "Enter")
    await page.wait_for_selector(row.format(nm("bj")), timeout=30000)
    assert await page.locator(".spacer .row").count() == 1
    assert await page.inner_text("#selector-refused") == ""

    await page.click(f"{row.format(nm('bj'))} .chip:text('env=prod')")  # narrows nothing more
    await page.fill("#selector", "env=prod")
    await page.press("#selector", "Enter")
    await page.wait_for_selector(row.format(nm("sh")), timeout=30000)
    await page.check("#all-online")
    await page.fill("#command", "echo matched-$((6*7))")
    await page.click("#run")
    await page.wait_for_function("document.querySelectorAll('#results .result').length === 2")
    results = await page.locator("#results .result").all_inner_texts()
    assert sorted(r.split()[0] for r in results) == [nm("bj"), nm("sh")]
    assert all("exit 0" in r and "matched-42" in r for r in results)

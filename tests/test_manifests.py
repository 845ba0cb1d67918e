"""manifests/ validate against the Kubernetes API schemas and agree with the application."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from schemas.settings import Settings, sqlite_path

MANIFESTS = Path(__file__).parents[1] / "manifests"


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(MANIFESTS.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
    ]


@pytest.mark.parametrize(
    "doc", [d for _, d in documents()], ids=[f"{n}:{d['kind']}" for n, d in documents()]
)
def test_every_manifest_validates_strictly(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, "1.30", strict=True)


def test_kustomization_names_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    named = set(kustomization["resources"])
    assert named == {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}


def test_the_pod_outlives_the_apps_shutdown_drain() -> None:
    (deployment,) = [d for _, d in documents() if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    shutdown = float(env.get("FRPA_SHUTDOWN_TIMEOUT") or Settings().shutdown_timeout)
    # The adapter spends FRPA_SHUTDOWN_TIMEOUT once, from SIGTERM to exit (tests/api/
    # test_shutdown.py measures it), plus about a second to stop the process itself.
    assert pod["terminationGracePeriodSeconds"] >= shutdown + 5
    assert env["FRPA_STORE"] == "kubernetes"
    assert env["FRPA_KUBERNETES_AUTH"] == "1"  # never an anonymous admin
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["privileged"] is False


def test_the_example_frps_toml_registers_only_the_ops_on_the_connect_path() -> None:
    config = tomllib.loads((MANIFESTS / "frps.toml").read_text())
    (plugin,) = config["httpPlugins"]
    assert plugin["path"] == "/frps/handler"
    assert plugin["ops"] == ["Login", "NewProxy", "CloseProxy"]


def test_the_images_default_store_is_writable_by_its_user() -> None:
    dockerfile = (MANIFESTS.parent / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+)$", dockerfile, re.M)
    store = re.search(r"^ENV FRPA_STORE=(\S+)$", dockerfile, re.M)
    assert user is not None
    assert store is not None
    directory = str(Path(sqlite_path(store[1])).parent)
    assert f"mkdir -p {directory} && chown {user[1]} {directory}" in dockerfile
    assert f"VOLUME {directory}" in dockerfile

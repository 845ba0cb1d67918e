"""The alerts and the dashboard that ship: promtool checks and unit-tests the rules (Debian's
`prometheus` package has it), the PrometheusRule holds the same rules, and every metric
they name is one the adapter exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from tests.support import certificate, settings_for

MANIFESTS = Path(__file__).parents[1] / "manifests"
RULES = MANIFESTS / "prometheus" / "rules.yaml"
DASHBOARD = MANIFESTS / "grafana" / "frp-adapter.json"
_METRIC = re.compile(r"\bfrpa_[a-z_]+")
# The series of a family that `# TYPE <name> <type>` announces (a counter's name there
# already ends in _total).
_SERIES = {"histogram": ("_bucket", "_sum", "_count")}


def promtool(*args: str) -> str:
    done = subprocess.run(
        ["promtool", *args], capture_output=True, text=True, cwd=RULES.parent, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    assert "SUCCESS: 10 rules found" in promtool("check", "rules", RULES.name)
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yaml")


def test_the_prometheus_rule_holds_the_rules_promtool_tests() -> None:
    rule = yaml.safe_load((RULES.parent / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    kustomization = yaml.safe_load((RULES.parent / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["prometheusrule.yaml"]


def named_in_rules_and_dashboard() -> set[str]:
    expressions = [
        rule["expr"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    ]
    dashboard = json.loads(DASHBOARD.read_text())
    expressions += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return {name for expression in expressions for name in _METRIC.findall(expression)}


async def exported(tmp_path: Path, aiohttp_client: AiohttpClient) -> set[str]:
    """Every series name the adapter's /metrics can carry, TLS and label gauges included."""
    cert, key = certificate(tmp_path, "adapter")
    settings = settings_for(
        tmp_path, tls_cert_file=str(cert), tls_key_file=str(key), metric_labels=("site",)
    )
    client = await aiohttp_client(create_app(settings))
    text = await (await client.get("/metrics")).text()
    names = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names |= {family + suffix for suffix in _SERIES.get(kind, ("",))}
    return names


async def test_every_metric_the_rules_and_the_dashboard_name_is_exported(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    named = named_in_rules_and_dashboard()
    assert {"frpa_ready", "frpa_node_transitions_total", "frpa_store_backlog"} <= named
    assert sorted(named - await exported(tmp_path, aiohttp_client)) == []

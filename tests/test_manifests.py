"""manifests/ validate against the Kubernetes API schemas and agree with the application."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from nodes.supervisor import FAILURES_DOWN, Supervisor
from schemas.settings import Settings, sqlite_path
from tests.clock import FakeClock
from tests.support import BACKOFF

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


def pod_spec() -> dict[str, Any]:
    (deployment,) = [d for _, d in documents() if d["kind"] == "Deployment"]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def test_the_pod_outlives_the_apps_shutdown_drain() -> None:
    pod = pod_spec()
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


class Liveness(NamedTuple):
    """The container's livenessProbe, with Kubernetes's defaults for what it leaves out: the
    kubelet restarts the container once `threshold` probes in a row fail, one every
    `period` seconds from `delay` seconds after it started."""

    period: float
    threshold: int
    delay: float


def liveness() -> Liveness:
    (container,) = pod_spec()["containers"]
    probe = container["livenessProbe"]
    assert probe["httpGet"]["path"] == "/healthz"
    return Liveness(
        probe.get("periodSeconds", 10),
        probe.get("failureThreshold", 3),
        probe.get("initialDelaySeconds", 0),
    )


# The probe's phases tried: its start to a tenth of its period.
PHASES = 10


def failing(clock: FakeClock, *, times: float, runs: float) -> Callable[[], Awaitable[None]]:
    """Work that runs `runs` seconds and raises, its first `times` times; then runs on."""
    started = 0

    async def work() -> None:
        nonlocal started
        started += 1
        await clock.sleep(runs)
        if started <= times:
            raise RuntimeError("failed")
        await clock.sleep(math.inf)

    return work


async def probed(
    work: Callable[[], Awaitable[None]], clock: FakeClock, probe: Liveness, seconds: float
) -> list[float | None]:
    """Guarding `work` for `seconds`: for each phase of the probe, when the kubelet restarts
    the container (seconds after it started), or None if it does not."""
    step = probe.period / PHASES
    supervisor = Supervisor(clock, BACKOFF)
    supervisor.start("task", work)
    down: list[bool] = []
    try:
        for _ in range(math.ceil(seconds / step) + 1):
            down.append(bool(supervisor.down()))
            await clock.advance(step)
    finally:
        await supervisor.stop()
    restarts: list[float | None] = []
    for phase in range(PHASES):
        failed = 0
        restart = None
        for i in range(round(probe.delay / step) + phase, len(down), PHASES):
            failed = failed + 1 if down[i] else 0
            if failed == probe.threshold:
                restart = i * step
                break
        restarts.append(restart)
    return restarts


@pytest.mark.parametrize("failures", range(1, FAILURES_DOWN + 1))
async def test_a_task_that_fails_and_recovers_is_never_down_long_enough_to_restart_the_pod(
    failures: int,
) -> None:
    probe = liveness()
    clock = FakeClock()
    # Failures back to back, the longest it can be down for them; then it runs.
    recovered = sum(BACKOFF.longest(n) for n in range(1, failures + 1))
    work = failing(clock, times=failures, runs=0)
    restarts = await probed(work, clock, probe, recovered + probe.threshold * probe.period)
    assert restarts == [None] * PHASES


@pytest.mark.parametrize("runs", [0.0, 1.0], ids=["failing at once", "running a probe period"])
async def test_a_task_that_keeps_failing_is_down_long_enough_for_the_probe_to_restart_the_pod(
    runs: float,
) -> None:
    probe = liveness()
    clock = FakeClock()
    runs *= probe.period
    tolerated = probe.threshold * probe.period
    # Failing back to back, it is down from its FAILURES_DOWN-th failure on. With runs in
    # between (a probe answered then resets the kubelet's count), only a wait to be started
    # again that outlasts what the probe tolerates restarts the pod: the first whose
    # wait, cut by the most its jitter cuts, still does.
    failures = FAILURES_DOWN
    while runs and BACKOFF.longest(failures) * (1 - BACKOFF.jitter) < tolerated:
        assert BACKOFF.longest(failures + 1) > BACKOFF.longest(failures), (
            "the backoff stops short of the probe"
        )
        failures += 1
    failed = sum(runs + BACKOFF.longest(n) for n in range(1, failures)) + runs
    deadline = max(failed, probe.delay) + tolerated
    restarts = await probed(failing(clock, times=math.inf, runs=runs), clock, probe, deadline)
    assert all(restart is not None and restart <= deadline for restart in restarts), restarts

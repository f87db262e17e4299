"""Several real vLLM CPU servers behind vLLM's own router, for the scale-out test and benchmark.

Each server gets its own core (`VLLM_CPU_OMP_THREADS_BIND`), prefix caching with 32-token blocks, and the
embedded model; the router (PyPI `vllm-router`, a Rust binary) checks their health every second, so a dead
server leaves its hash ring within a couple of seconds.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from loadtests.harness import free_port, start_process, start_vllm, stop, wait_ready
from service.runtime.load import parse_metrics


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Cluster:
    engines: list[Server]
    routers: dict[str, Server] = field(default_factory=dict)  # policy -> router

    def stop(self) -> None:
        for server in [*self.routers.values(), *self.engines]:
            stop(server.process)


def start_engine(
    model_dir: str, core: int, log_dir: Path, name: str = "smol", dev_mode: bool = False
) -> Server:
    port = free_port()
    log = log_dir / f"vllm-{port}.log"
    env = {"VLLM_CPU_OMP_THREADS_BIND": str(core)}
    if dev_mode:  # adds POST /reset_prefix_cache, which the benchmark uses between its arms
        env["VLLM_SERVER_DEV_MODE"] = "1"
    return Server(f"http://127.0.0.1:{port}", start_vllm(port, Path(model_dir), name, log, env=env), log)


def start_router(worker_urls: list[str], policy: str, log_dir: Path) -> Server:
    port = free_port()
    log = log_dir / f"router-{policy}-{port}.log"
    command = [
        sys.executable, "-m", "vllm_router.launch_router",
        "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *worker_urls, "--policy", policy,
        "--prometheus-port", str(free_port()),
        "--health-check-interval-secs", "1", "--health-failure-threshold", "1",
        "--cb-failure-threshold", "2", "--retry-max-retries", "3",
    ]  # fmt: skip
    return Server(f"http://127.0.0.1:{port}", start_process(command, log), log)


def start_cluster(
    model_dir: str, log_dir: Path, policies: tuple[str, ...] = ("consistent_hash",), dev_mode: bool = False
) -> Cluster:
    """Two engines (cores 0 and 1) and one router per policy, all ready."""
    cluster = Cluster([start_engine(model_dir, core, log_dir, dev_mode=dev_mode) for core in (0, 1)])
    try:
        for engine in cluster.engines:
            wait_ready(engine.url, engine.process, "/health", timeout=600, log_path=engine.log)
        for policy in policies:
            router = start_router([engine.url for engine in cluster.engines], policy, log_dir)
            cluster.routers[policy] = router
            wait_ready(router.url, router.process, "/health", timeout=120, log_path=router.log)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def engine_counters(url: str) -> dict[str, float]:
    """An engine's request and prefix-cache counters from its /metrics (summed over labels)."""
    wanted = {
        "vllm:request_success_total": "requests",
        "vllm:prefix_cache_queries_total": "cache_queries",
        "vllm:prefix_cache_hits_total": "cache_hits",
        "vllm:prompt_tokens_total": "prompt_tokens",
    }
    values = parse_metrics(httpx.get(f"{url}/metrics", timeout=10).text)
    return {key: sum(values.get(name, [])) for name, key in wanted.items()}

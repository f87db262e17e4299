"""Affinity key versus round-robin on two engines, side by side in one run: a mix of tree searches and
revisions through the service (TTC_ENGINE=remote) in front of vLLM's router, once with the router's
consistent-hash policy (which hashes our per-request affinity header) and once with round-robin, plus the same
work on a single engine for the reference hit rate. The engines' prefix caches are emptied between arms.

Prefix-cache hit rate = the engines' own `vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total`
(tokens) over the arm; problems/min = problems finished / wall minutes at the same client concurrency.

    .venv/bin/python -m loadtests.affinity [--problems 8] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from loadtests.cluster import Cluster, engine_counters, start_cluster
from loadtests.harness import ROOT, print_result, running_service
from service.runtime.model_files import resolve_model
from service.runtime.settings import Settings

RESULTS = ROOT / "loadtests" / "results" / "affinity"
GSM8K = Path("/work/shared/data/gsm8k/test.jsonl")
STEPS = "Solve it step by step, one short step per paragraph, then end with 'The answer is N'."


def problems(count: int) -> list[dict[str, Any]]:
    """Alternating tree searches (beam search, a judge scoring every step) and revision chains."""
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[:count] if line.strip()]
    bodies: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        prompt = f"{row['question']}\n{STEPS}"
        if index % 2 == 0:
            bodies.append(
                {
                    "prompt": prompt,
                    "strategy": "beam_search",
                    "params": {"width": 4, "beam_width": 2, "max_depth": 3, "step_tokens": 24},
                    "verifier": {"name": "judge"},
                    "sampling": {"max_tokens": 96, "seed": index},
                    "budget": {"seconds": 300},
                }
            )
        else:
            bodies.append(
                {
                    "prompt": prompt,
                    "strategy": "revision",
                    "params": {"chains": 2, "depth": 3},
                    "sampling": {"max_tokens": 96, "seed": index},
                    "budget": {"tokens": 1200, "seconds": 300},
                }
            )
    return bodies


def reset_caches(cluster: Cluster) -> None:
    for engine in cluster.engines:
        httpx.post(f"{engine.url}/reset_prefix_cache", timeout=30).raise_for_status()


def run_arm(
    name: str,
    engine_url: str,
    cluster: Cluster,
    bodies: list[dict[str, Any]],
    concurrency: int,
    log_dir: Path,
) -> dict[str, Any]:
    model_dir = resolve_model(None, Settings().model_cache_dir)
    args = ["--engine", "remote", "--engine-url", engine_url, "--model", model_dir]
    with running_service(None, log_dir / name, args=args) as service:
        reset_caches(cluster)
        before = [engine_counters(engine.url) for engine in cluster.engines]
        started = time.monotonic()

        def solve(body: dict[str, Any]) -> dict[str, Any]:
            response = httpx.post(f"{service}/v1/solve", json=body, timeout=900)
            response.raise_for_status()
            return dict(response.json())

        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(solve, bodies))
        minutes = (time.monotonic() - started) / 60
        after = [engine_counters(engine.url) for engine in cluster.engines]
    queries = sum(a["cache_queries"] - b["cache_queries"] for a, b in zip(after, before, strict=True))
    hits = sum(a["cache_hits"] - b["cache_hits"] for a, b in zip(after, before, strict=True))
    per_engine = [a["requests"] - b["requests"] for a, b in zip(after, before, strict=True)]
    arm = {
        "hit_rate": round(hits / queries, 4) if queries else 0.0,
        "problems_per_min": round(len(bodies) / minutes, 3),
        "minutes": round(minutes, 2),
        "engine_requests": per_engine,
        "cached_tokens_reported": sum(r["usage"]["cached_prompt_tokens"] for r in results),
        "completion_tokens": sum(r["usage"]["completion_tokens"] for r in results),
    }
    print(f"{name:12s} {json.dumps(arm)}", flush=True)
    return arm


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS / "logs"
    bodies = problems(args.problems)
    model_dir = resolve_model(None, Settings().model_cache_dir)
    started = time.monotonic()
    cluster = start_cluster(model_dir, log_dir, policies=("consistent_hash", "round_robin"), dev_mode=True)
    try:
        affinity = run_arm(
            "affinity", cluster.routers["consistent_hash"].url, cluster, bodies, args.concurrency, log_dir
        )
        round_robin = run_arm(
            "round_robin", cluster.routers["round_robin"].url, cluster, bodies, args.concurrency, log_dir
        )
        single = run_arm("single", cluster.engines[0].url, cluster, bodies, args.concurrency, log_dir)
    finally:
        cluster.stop()
    result = {
        "benchmark": "affinity",
        "problems": len(bodies),
        "concurrency": args.concurrency,
        "affinity": affinity,
        "round_robin": round_robin,
        "single_engine": single,
        "hit_rate_gap_to_single_points": round(100 * (single["hit_rate"] - affinity["hit_rate"]), 2),
        "throughput_ratio_affinity_over_round_robin": round(
            affinity["problems_per_min"] / round_robin["problems_per_min"], 3
        ),
        "hit_rate_within_5_points": single["hit_rate"] - affinity["hit_rate"] <= 0.05,
        "beats_round_robin": affinity["problems_per_min"] > round_robin["problems_per_min"],
        "minutes": round((time.monotonic() - started) / 60, 2),
    }
    print_result(result, RESULTS / "result.json")


if __name__ == "__main__":
    main()

"""Retrieval benchmark (no LLM engine): ingestion rate (chunks/s, embedding and the Redis transaction
included) and search latency p50/p99 through HTTP at 10^4 and 10^5 synthetic chunks, plus the time a replica
needs to load the index from Redis.

    .venv/bin/python -m loadtests.retrieval [--quick] [--sizes 10000 100000] [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from typing import Any

import httpx

from loadtests.harness import ROOT, percentile, print_result, running_service

RESULTS = ROOT / "loadtests" / "results" / "retrieval"
WORDS = [
    "river",
    "town",
    "market",
    "glass",
    "clock",
    "ferry",
    "tower",
    "bridge",
    "harbour",
    "mill",
    "orchard",
    "valley",
    "founded",
    "born",
    "weaver",
    "lantern",
    "archive",
    "festival",
    "quarry",
    "canal",
    "beacon",
    "granary",
    "forge",
    "chapel",
    "meadow",
]


# A service whose engine points nowhere: corpora work, no model is loaded (so wait on /healthz, not /readyz).
ENGINELESS = ("--engine", "none")


def synthetic(rng: random.Random, index: int) -> dict[str, str]:
    text = " ".join(rng.choice(WORDS) for _ in range(24))
    return {"id": f"d{index}", "title": f"Entry {index}", "text": f"{text} number {index}."}


def run_size(client: httpx.Client, size: int, batch: int, queries: int, rng: random.Random) -> dict[str, Any]:
    name = f"bench-retrieval-{uuid.uuid4().hex[:8]}"
    client.post("/v1/corpora", json={"name": name}).raise_for_status()
    try:
        started = time.monotonic()
        for start in range(0, size, batch):
            documents = [synthetic(rng, index) for index in range(start, min(size, start + batch))]
            client.post(f"/v1/corpora/{name}/documents", json={"documents": documents}).raise_for_status()
        ingest = time.monotonic() - started
        began = time.monotonic()
        client.post(f"/v1/corpora/{name}/search", json={"query": "warm up", "k": 5}).raise_for_status()
        load = time.monotonic() - began
        latencies = []
        for _ in range(queries):
            query = " ".join(rng.choice(WORDS) for _ in range(6))
            began = time.monotonic()
            client.post(f"/v1/corpora/{name}/search", json={"query": query, "k": 10}).raise_for_status()
            latencies.append((time.monotonic() - began) * 1000)
    finally:
        client.delete(f"/v1/corpora/{name}")
    return {
        "chunks": size,
        "ingest_seconds": round(ingest, 2),
        "chunks_per_second": round(size / ingest, 1),
        "index_load_seconds": round(load, 3),
        "search_p50_ms": round(statistics.median(latencies), 2),
        "search_p99_ms": round(percentile(latencies, 0.99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="use this running service instead of starting an engineless one")
    parser.add_argument("--quick", action="store_true", help="500 and 2000 chunks, 50 queries")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="corpus sizes")
    parser.add_argument("--batch", type=int, default=1000, help="documents per ingestion request")
    parser.add_argument("--queries", type=int, default=300, help="searches timed per size")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries = [500, 2000], 50
    rows = []
    with (
        running_service(args.url, RESULTS, args=ENGINELESS, path="/healthz") as url,
        httpx.Client(base_url=url, timeout=600) as client,
    ):
        for size in args.sizes:
            row = run_size(client, size, args.batch, args.queries, random.Random(size))
            rows.append(row)
            print(
                f"{size:>7} chunks: ingest {row['chunks_per_second']:8.1f} chunks/s ({row['ingest_seconds']} s), "
                f"index load {row['index_load_seconds']} s, search p50 {row['search_p50_ms']} ms, "
                f"p99 {row['search_p99_ms']} ms"
            )
    if len(rows) >= 2:
        print(
            f"search p50 ratio {rows[-1]['chunks']}/{rows[0]['chunks']}: "
            f"{rows[-1]['search_p50_ms'] / rows[0]['search_p50_ms']:.2f}x"
        )
    print_result({"benchmark": "retrieval", "sizes": rows})


if __name__ == "__main__":
    main()

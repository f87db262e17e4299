"""Multi-tenant load: do small interactive callers stay fast while one greedy key pushes the engine?

One service (in-process engine) with keys, quotas and admission control. First the engine's capacity for small
requests is measured (a closed loop of 8 callers); then two phases of `--duration` seconds each, side by side in
one run, each with fresh keys:

  without  9 small keys send short chat completions, open loop (Poisson), together at `--load` x capacity
  with     the same small load, plus 1 greedy key running wide, long best-of-N solves from `--greedy-workers`
           callers at once (large n, long budgets)

Every key has a per-day token quota (the small keys' about `--quota-fraction` of what they ask for, so some of
their requests are refused with 429s). Per key it reports requests served, 429s (by limit), p50/p99 latency of
served requests, spend / quota from the key's ledger (must be <= 1.0) and 5xx (must be 0). Target: the small
keys' p99 with the greedy key present within 2x of their p99 without it. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadtests.harness import RESULTS, percentile, print_result, running_service

OUT = RESULTS / "tenants"
SMALL_KEYS = 9
ADMIN = "bench-admin-" + uuid.uuid4().hex


@dataclass
class KeyStats:
    name: str
    secret: str
    quota: int
    greedy: bool = False
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    tokens: int = 0

    def summary(self, ledger_tokens: int) -> dict[str, Any]:
        served = self.statuses[200]
        return {
            "key": self.name,
            "greedy": self.greedy,
            "served": served,
            "rejected_429": self.statuses[429],
            "rejected_by": dict(self.refusals),
            "p50_s": round(percentile(self.latencies, 0.5), 3) if self.latencies else None,
            "p99_s": round(percentile(self.latencies, 0.99), 3) if self.latencies else None,
            "reported_tokens": self.tokens,
            "ledger_tokens": ledger_tokens,
            "quota_tokens": self.quota,
            "spend_over_quota": round(ledger_tokens / self.quota, 4),
            "errors_5xx": sum(count for status, count in self.statuses.items() if status >= 500),
            "other_errors": sum(
                count for status, count in self.statuses.items() if status not in (200, 429) and status < 500
            ),
        }


def question(rng: random.Random) -> str:
    return f"What is {rng.randint(10, 99)} + {rng.randint(10, 99)}? Answer with just the number."


async def create_key(http: httpx.AsyncClient, name: str, quota: int) -> str:
    response = await http.post(
        "/v1/keys",
        json={"name": name, "limits": {"tokens_per_day": quota, "max_seconds": 120}},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    response.raise_for_status()
    secret: str = response.json()["key"]
    return secret


async def small_request(http: httpx.AsyncClient, stats: KeyStats, rng: random.Random, tokens: int) -> None:
    body = {
        "messages": [{"role": "user", "content": question(rng)}],
        "max_tokens": tokens,
        "temperature": 0.8,
    }
    await send(http, stats, "/v1/chat/completions", body)


async def send(http: httpx.AsyncClient, stats: KeyStats, path: str, body: dict[str, Any]) -> None:
    started = time.monotonic()
    try:
        response = await http.post(path, json=body, headers={"Authorization": f"Bearer {stats.secret}"})
    except httpx.HTTPError as exc:
        stats.statuses[599] += 1
        stats.refusals[type(exc).__name__] += 1
        return
    stats.statuses[response.status_code] += 1
    if response.status_code == 200:
        stats.latencies.append(time.monotonic() - started)
        stats.tokens += int(response.json()["usage"]["completion_tokens"])
    elif response.status_code == 429:
        stats.refusals[str(response.json()["error"]["code"])] += 1
        assert int(response.headers["retry-after"]) >= 1


async def measure_capacity(http: httpx.AsyncClient, secret: str, seconds: float, tokens: int) -> float:
    """Small requests per second the engine completes with 8 callers in a closed loop."""
    stats = KeyStats("capacity", secret, 1)
    rng = random.Random(0)
    stop_at = time.monotonic() + seconds

    async def caller() -> None:
        while time.monotonic() < stop_at:
            await small_request(http, stats, rng, tokens)

    started = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(8)))
    return stats.statuses[200] / (time.monotonic() - started)


async def phase(
    http: httpx.AsyncClient, label: str, args: argparse.Namespace, capacity: float, greedy: bool
) -> dict[str, Any]:
    rate = args.load * capacity
    per_key_demand = rate / SMALL_KEYS * args.duration * args.small_tokens
    small_quota = max(int(per_key_demand * args.quota_fraction), args.small_tokens)
    keys = [
        KeyStats(
            f"{label}-small-{index}",
            await create_key(http, f"{label}-small-{index}-{uuid.uuid4().hex[:6]}", small_quota),
            small_quota,
        )
        for index in range(SMALL_KEYS)
    ]
    greedy_stats = None
    if greedy:
        quota = args.greedy_quota
        greedy_stats = KeyStats(
            f"{label}-greedy",
            await create_key(http, f"{label}-greedy-{uuid.uuid4().hex[:6]}", quota),
            quota,
            True,
        )
    rng = random.Random(1)
    stop_at = time.monotonic() + args.duration
    tasks: list[asyncio.Task[None]] = []

    async def greedy_worker() -> None:
        assert greedy_stats is not None
        body = {
            "prompt": "Write a long, detailed story about a lighthouse keeper and a storm.",
            "strategy": "best_of_n",
            "params": {"n": args.greedy_n},
            "budget": {"tokens": args.greedy_n * args.greedy_tokens, "seconds": 120},
            "sampling": {"max_tokens": args.greedy_tokens},
        }
        while time.monotonic() < stop_at:
            await send(http, greedy_stats, "/v1/solve", body)
            if greedy_stats.statuses[429] and time.monotonic() < stop_at:
                await asyncio.sleep(0.5)

    workers = [asyncio.create_task(greedy_worker()) for _ in range(args.greedy_workers if greedy else 0)]
    index = 0
    while time.monotonic() < stop_at:  # open loop: small requests arrive whatever the service does
        await asyncio.sleep(rng.expovariate(rate))
        tasks.append(
            asyncio.create_task(small_request(http, keys[index % SMALL_KEYS], rng, args.small_tokens))
        )
        index += 1
    await asyncio.gather(*tasks, *workers)
    everyone = keys + ([greedy_stats] if greedy_stats else [])
    rows = []
    for stats in everyone:
        # the ledger as the key itself sees it
        usage = await http.get("/v1/usage", headers={"Authorization": f"Bearer {stats.secret}"})
        ledger = int(usage.json()["usage"]["windows"]["day"]["tokens"]["spent"])
        rows.append(stats.summary(ledger))
    small_latencies = [value for stats in keys for value in stats.latencies]
    return {
        "offered_small_rps": round(rate, 3),
        "small_requests_sent": index,
        "small_p50_s": round(percentile(small_latencies, 0.5), 3) if small_latencies else None,
        "small_p99_s": round(percentile(small_latencies, 0.99), 3) if small_latencies else None,
        "small_served": sum(stats.statuses[200] for stats in keys),
        "small_429": sum(stats.statuses[429] for stats in keys),
        "max_spend_over_quota": max(row["spend_over_quota"] for row in rows),
        "errors_5xx": sum(row["errors_5xx"] for row in rows),
        "ledger_equals_reported": all(row["ledger_tokens"] == row["reported_tokens"] for row in rows),
        "keys": rows,
    }


def show(label: str, result: dict[str, Any]) -> None:
    print(
        f"\n{label}: offered {result['offered_small_rps']} small req/s; small p50 {result['small_p50_s']} s, "
        f"p99 {result['small_p99_s']} s; served {result['small_served']}, 429 {result['small_429']}; "
        f"max spend/quota {result['max_spend_over_quota']}; 5xx {result['errors_5xx']}"
    )
    print(
        f"  {'key':<22}{'served':>7}{'429':>6}{'p50 s':>8}{'p99 s':>8}{'spend/quota':>13}{'5xx':>5}  refusals"
    )
    for row in result["keys"]:
        print(
            f"  {row['key']:<22}{row['served']:>7}{row['rejected_429']:>6}{row['p50_s'] or 0:>8}"
            f"{row['p99_s'] or 0:>8}{row['spend_over_quota']:>13}{row['errors_5xx']:>5}  {row['rejected_by']}"
        )


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        probe = await create_key(http, f"capacity-{uuid.uuid4().hex[:6]}", 10**9)
        capacity = await measure_capacity(http, probe, args.capacity_seconds, args.small_tokens)
        print(f"capacity: {capacity:.2f} small requests/s (8 callers, {args.small_tokens} tokens each)")
        without = await phase(http, "without", args, capacity, greedy=False)
        show("without the greedy key", without)
        with_greedy = await phase(http, "with", args, capacity, greedy=True)
        show("with the greedy key", with_greedy)
    ratio = (
        with_greedy["small_p99_s"] / without["small_p99_s"]
        if with_greedy["small_p99_s"] and without["small_p99_s"]
        else None
    )
    print(f"\nsmall keys' p99 with / without the greedy key: {ratio and round(ratio, 3)} (target <= 2)")
    return {
        "benchmark": "tenants",
        "duration_s_per_phase": args.duration,
        "capacity_small_rps": round(capacity, 3),
        "load_x_capacity": args.load,
        "admission": {
            "max_sequences": args.max_sequences,
            "max_waiting": args.max_waiting,
            "key_share": args.key_share,
        },
        "small_p99_ratio_with_over_without": ratio and round(ratio, 3),
        "target_met": bool(
            ratio is not None
            and ratio <= 2
            and max(without["max_spend_over_quota"], with_greedy["max_spend_over_quota"]) <= 1.0
            and without["errors_5xx"] + with_greedy["errors_5xx"] == 0
        ),
        "without_greedy": without,
        "with_greedy": with_greedy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running service (its TTC_ADMIN_KEY must be --admin-key)")
    parser.add_argument("--admin-key", default=None, help="admin key of the service given by --url")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds per phase")
    parser.add_argument("--capacity-seconds", type=float, default=20.0, help="seconds to measure capacity")
    parser.add_argument("--load", type=float, default=2.0, help="small load as a multiple of the capacity")
    parser.add_argument("--small-tokens", type=int, default=16, help="max_tokens of a small request")
    parser.add_argument("--quota-fraction", type=float, default=0.7, help="small quota / small demand")
    parser.add_argument("--greedy-n", type=int, default=64, help="samples of a greedy solve")
    parser.add_argument("--greedy-tokens", type=int, default=256, help="max_tokens of a greedy sample")
    parser.add_argument("--greedy-workers", type=int, default=4, help="greedy solves in flight")
    parser.add_argument("--greedy-quota", type=int, default=200_000, help="greedy key's tokens per day")
    parser.add_argument("--max-sequences", type=int, default=32, help="TTC_ADMISSION_MAX_SEQUENCES")
    parser.add_argument("--max-waiting", type=int, default=64, help="TTC_ADMISSION_MAX_WAITING")
    parser.add_argument("--key-share", type=float, default=0.5, help="TTC_ADMISSION_KEY_SHARE")
    args = parser.parse_args()
    global ADMIN
    if args.admin_key:
        ADMIN = args.admin_key
    env = {
        "TTC_KEYS_NAMESPACE": f"bench-tenants-{uuid.uuid4().hex}",
        "TTC_ADMIN_KEY": ADMIN,
        "TTC_ADMISSION_MAX_SEQUENCES": str(args.max_sequences),
        "TTC_ADMISSION_MAX_WAITING": str(args.max_waiting),
        "TTC_ADMISSION_MAX_WAIT_SECONDS": "10",
        "TTC_ADMISSION_KEY_SHARE": str(args.key_share),
    }
    with running_service(args.url, OUT, env=env) as url:
        result = asyncio.run(run(url, args))
    print_result(result, Path(OUT / "result.json"))


if __name__ == "__main__":
    main()

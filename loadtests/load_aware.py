"""Load-aware `auto` against load-blind `auto` under open-loop load, side by side in one run.

1. Capacity: load-blind `auto` in a closed loop (`--concurrency` requests in flight) for `--calibrate` seconds;
   its completed requests per second is 1x.
2. For each policy (load-aware with the `latency` goal, load-blind with `params.load_aware: false`) and each
   offered rate (1x and 2x capacity by default): Poisson arrivals of the scenario's `auto` requests
   (loadtests/scenarios/load_aware.toml: arithmetic, 800 tokens and 20 s per request, SLO 20 s end to end),
   through loadtests/load.py's own request and report code. Each policy keeps its own past-prompt memory.

Reports correct answers per second within the SLO, goodput, accuracy, p50/p99 latency and tokens per request
per policy and rate, and the load-aware/load-blind ratio at each rate. Ends with one JSON line.

    .venv/bin/python -m loadtests.load_aware --quick     # about 5 minutes
    .venv/bin/python -m loadtests.load_aware             # about 12 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path
from typing import Any

from loadtests.harness import ROOT, print_result, running_service
from loadtests.load import OUT, run
from loadtests.scenario import Scenario, load_scenario

SCENARIO = ROOT / "loadtests" / "scenarios" / "load_aware.toml"


def policy_scenario(
    base: Scenario, policy: str, rates: list[float], arrival: str, duration: float
) -> Scenario:
    entry = base.mix[0]
    memory = f"load-aware-bench-{policy}-{uuid.uuid4().hex[:8]}"
    params = dict(entry.params) | {"memory": memory}
    if policy == "blind":
        params = {"memory": memory, "load_aware": False}
    mix = [entry.model_copy(update={"name": policy, "params": params})]
    return base.model_copy(
        update={"mix": mix, "rates": rates, "arrival": arrival, "duration_seconds": duration}
    )


def figures(report: dict[str, Any], group: str) -> dict[str, Any]:
    stats = report["groups"][group]
    return {
        "rate": report["rate"],
        "sent": stats["sent"],
        "completed": stats["completed"],
        "correct_within_slo_per_s": stats["correct_within_slo_per_s"],
        "goodput": round(stats["goodput"], 4),
        "accuracy": stats["accuracy"],
        "e2e_p50_ms": stats["e2e_ms"]["p50"],
        "e2e_p99_ms": stats["e2e_ms"]["p99"],
        "tokens_per_request": stats.get("tokens_per_request"),
        "eflops_per_request": stats["eflops_per_request"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.load_aware",
        description="Load-aware auto (latency goal) vs load-blind auto at 1x and 2x measured capacity: correct "
        "answers per second within the SLO.",
    )
    parser.add_argument("--url", help="a running service (default: start one)")
    parser.add_argument("--scenario", type=Path, default=SCENARIO)
    parser.add_argument("--capacity", type=float, help="1x in requests/s (default: measured, step 1)")
    parser.add_argument("--multiples", default="1,2", help="offered rates as multiples of capacity")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="requests in flight while measuring capacity"
    )
    parser.add_argument("--calibrate", type=float, default=60.0, help="seconds of the capacity measurement")
    parser.add_argument("--duration", type=float, default=90.0, help="measured seconds per policy and rate")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait for the last requests")
    parser.add_argument("--quick", action="store_true", help="shorter phases (about 5 minutes)")
    args = parser.parse_args(argv)
    if args.quick:
        args.calibrate, args.duration, args.drain = 30.0, 40.0, 60.0
    base = load_scenario(args.scenario)
    out = OUT / "load_aware"
    out.mkdir(parents=True, exist_ok=True)
    multiples = [float(m) for m in args.multiples.split(",")]
    with running_service(args.url, out) as url:
        capacity = args.capacity
        if capacity is None:
            closed = policy_scenario(base, "blind", [float(args.concurrency)], "concurrency", args.calibrate)
            (report,) = asyncio.run(run(closed, url, None, args.drain))
            capacity = report["groups"]["all"]["request_throughput"]
            print(
                f"capacity (load-blind auto, {args.concurrency} in flight): {capacity:.3f} req/s", flush=True
            )
        rates = [round(capacity * m, 4) for m in multiples]
        results: dict[str, list[dict[str, Any]]] = {}
        for policy in ("aware", "blind"):
            scenario = policy_scenario(base, policy, rates, "poisson", args.duration)
            reports = asyncio.run(run(scenario, url, None, args.drain))
            results[policy] = [figures(report, policy) for report in reports]
            for row in results[policy]:
                print(f"{policy:>6} {row}", flush=True)
    ratios = []
    for aware, blind in zip(results["aware"], results["blind"], strict=True):
        base_value = blind["correct_within_slo_per_s"] or 0.0
        ratios.append(
            {
                "rate": aware["rate"],
                "correct_within_slo_ratio": round((aware["correct_within_slo_per_s"] or 0.0) / base_value, 3)
                if base_value
                else None,
                "goodput_ratio": round(aware["goodput"] / blind["goodput"], 3) if blind["goodput"] else None,
            }
        )
    result = {
        "benchmark": "load_aware",
        "capacity_rps": round(capacity, 4),
        "multiples": multiples,
        "aware": results["aware"],
        "blind": results["blind"],
        "ratios": ratios,
        "target_met_at_2x": bool(
            len(ratios) > 1
            and ratios[-1]["correct_within_slo_ratio"] is not None
            and ratios[-1]["correct_within_slo_ratio"] >= 1.3
        ),
    }
    print_result(result, out / "result.json")


if __name__ == "__main__":
    main()

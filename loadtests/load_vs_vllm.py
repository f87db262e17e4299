"""The cost of the service itself under load: one scenario of plain chat, sent at every rate to vLLM's own
OpenAI server and to the service running on that same server (TTC_ENGINE=remote), side by side in one run.

    python -m loadtests.load_vs_vllm [--scenario loadtests/scenarios/plain.toml] [--rates 1,2,4,8]

The two sides alternate at each rate, `--rounds` times, who goes first alternating too, and each side's
outcomes are pooled, so drift of the machine falls on both. Reports, per rate, both sides' throughput and latency and the service/vLLM ratios;
targets: throughput >= 0.95x vLLM's at saturation (the highest rate), p99 TTFT overhead <= 20 ms at half load
(the rate nearest half of vLLM's saturated request throughput). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtests.harness import (
    DEFAULT_MODEL_DIR,
    RESULTS,
    free_port,
    interrupt,
    print_result,
    start_ready_service,
    start_vllm,
    stop,
    wait_ready,
)
from loadtests.load import Outcome, Target, first_model, rate_report, run_rate
from loadtests.scenario import Pools, Scenario, load_scenario

OUT = RESULTS / "load_vs_vllm"
SCENARIO = Path(__file__).resolve().parent / "scenarios" / "plain.toml"


async def side_by_side(
    scenario: Scenario, vllm: str, service: str, drain: float, rounds: int = 1
) -> list[dict[str, Any]]:
    """At every rate, `rounds` alternations of the two sides (who goes first alternates too), each side's
    outcomes pooled: a p99 from one short window is one request's outlier on a noisy machine."""
    targets = {
        "vllm": Target(vllm, {}, await first_model(vllm, {}), None),
        "service": Target(service, {}, await first_model(service, {}), None),
    }
    rows = []
    for index, rate in enumerate(scenario.rates):
        # rate_report drops each run's warm-up; the pooled elapsed counts it once, as for a single run
        warmup = scenario.warmup_seconds
        pooled: dict[str, tuple[list[Outcome], float]] = {"vllm": ([], warmup), "service": ([], warmup)}
        for round_index in range(rounds):
            first_vllm = (index + round_index) % 2 == 0
            for side in ["vllm", "service"] if first_vllm else ["service", "vllm"]:
                outcomes, elapsed = await run_rate(scenario, rate, targets[side], Pools(scenario.seed), drain)
                pooled[side] = (pooled[side][0] + outcomes, pooled[side][1] + elapsed - warmup)
        row: dict[str, Any] = {"rate": rate}
        for side, (outcomes, elapsed) in pooled.items():
            row[side] = rate_report(scenario, rate, outcomes, elapsed)["groups"]["all"]
        rows.append(row)
    return rows


def compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios per rate, and the two targets: throughput at saturation and p99 TTFT overhead at half load."""
    per_rate = []
    for row in rows:
        v, s = row["vllm"], row["service"]
        per_rate.append(
            {
                "rate": row["rate"],
                "vllm_rps": round(v["request_throughput"], 4),
                "service_rps": round(s["request_throughput"], 4),
                "vllm_tok_s": round(v["output_token_throughput"], 2),
                "service_tok_s": round(s["output_token_throughput"], 2),
                "throughput_ratio": s["output_token_throughput"] / v["output_token_throughput"]
                if v["output_token_throughput"]
                else None,
                "vllm_ttft_p99_ms": v["ttft_ms"]["p99"],
                "service_ttft_p99_ms": s["ttft_ms"]["p99"],
                "ttft_p99_overhead_ms": s["ttft_ms"]["p99"] - v["ttft_ms"]["p99"]
                if s["ttft_ms"]["p99"] is not None and v["ttft_ms"]["p99"] is not None
                else None,
                "vllm_ttft_p50_ms": v["ttft_ms"]["p50"],
                "service_ttft_p50_ms": s["ttft_ms"]["p50"],
                "ttft_p50_overhead_ms": s["ttft_ms"]["p50"] - v["ttft_ms"]["p50"]
                if s["ttft_ms"]["p50"] is not None and v["ttft_ms"]["p50"] is not None
                else None,
                "vllm_e2e_p99_ms": v["e2e_ms"]["p99"],
                "service_e2e_p99_ms": s["e2e_ms"]["p99"],
                "errors": v["errors"] + s["errors"],
                "tokens_per_request": [v["tokens_per_request"], s["tokens_per_request"]],
            }
        )
    saturated = per_rate[-1]
    capacity = max(r["vllm_rps"] for r in per_rate)
    half = min(per_rate, key=lambda r: abs(r["rate"] - capacity / 2))
    return {
        "per_rate": per_rate,
        "saturation_rate": saturated["rate"],
        "throughput_ratio_at_saturation": saturated["throughput_ratio"],
        "vllm_capacity_rps": capacity,
        "half_load_rate": half["rate"],
        "ttft_p99_overhead_ms_at_half_load": half["ttft_p99_overhead_ms"],
        "ttft_p50_overhead_ms_at_half_load": half["ttft_p50_overhead_ms"],
        "met_throughput": (saturated["throughput_ratio"] or 0) >= 0.95,
        "met_ttft": half["ttft_p99_overhead_ms"] is not None and half["ttft_p99_overhead_ms"] <= 20,
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.load_vs_vllm",
        description="Plain chat load against vLLM's own server and against the service on that server, "
        "side by side at every rate; ends with one JSON line.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--scenario", type=Path, default=SCENARIO, help="a plain-chat scenario (no ttc)")
    parser.add_argument("--rates", help="comma-separated rates overriding the scenario's")
    parser.add_argument("--duration", type=float, help="measured seconds per rate and side")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="model folder for vLLM")
    parser.add_argument(
        "--kv-cache-gib", type=int, default=2, help="vLLM's KV cache (VLLM_CPU_KVCACHE_SPACE)"
    )
    parser.add_argument("--drain", type=float, default=300.0, help="seconds to wait after the last arrival")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternations of the two sides at every rate, pooled per side (more: steadier percentiles)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    scenario = load_scenario(args.scenario)
    changes: dict[str, Any] = {}
    if args.rates:
        changes["rates"] = [float(rate) for rate in args.rates.split(",")]
    if args.duration:
        changes["duration_seconds"] = args.duration
    scenario = Scenario.model_validate(scenario.model_dump() | changes)
    if scenario.needs_ttc:
        raise SystemExit("load_vs_vllm compares plain chat only: the scenario's mix must not name a strategy")
    OUT.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, interrupt)
    port = free_port()
    vllm_url = f"http://127.0.0.1:{port}"
    vllm = start_vllm(port, args.model_dir, args.model_dir.name, OUT / "vllm.log", args.kv_cache_gib)
    service = None
    try:
        wait_ready(vllm_url, vllm, "/health", 600.0, OUT / "vllm.log")
        env = {"TTC_ENGINE": "remote", "TTC_ENGINE_URL": vllm_url}
        service_url, service = start_ready_service(OUT, env=env, timeout=600.0)
        rows = asyncio.run(side_by_side(scenario, vllm_url, service_url, args.drain, args.rounds))
    finally:
        stop(service)
        stop(vllm)
    result = compare(rows)
    for row in result["per_rate"]:
        print(
            f"rate {row['rate']:g}/s: vLLM {row['vllm_tok_s']} tok/s, service {row['service_tok_s']} tok/s "
            f"(x{row['throughput_ratio']:.3f}); TTFT p50 {row['vllm_ttft_p50_ms']} vs "
            f"{row['service_ttft_p50_ms']} ms, p99 {row['vllm_ttft_p99_ms']} vs "
            f"{row['service_ttft_p99_ms']} ms; e2e p99 {row['vllm_e2e_p99_ms']} vs {row['service_e2e_p99_ms']} ms"
        )
    final = {"benchmark": "load_vs_vllm", "scenario": scenario.name, **result}
    print_result(final, OUT / "result.json")
    return final


if __name__ == "__main__":
    main()

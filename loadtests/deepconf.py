"""DeepConf (online and offline) against majority best-of-N at the same N, side by side in one run.

Problems: the arithmetic levels (one-, two-, three-digit addition, one-digit multiplication) and GSM8K test
(loadtests/fit_profiles.py's report split). In one run it

1. draws a pool of N samples per problem with their top-20 logprobs (one OpenAI chat call with n = N, the same
   sampling as /v1/solve: temperature 0.8), priced with the service's own eFLOPs accounting: this pool IS
   majority best-of-N (one call, N samples, majority vote over all of them);
2. replays offline confidence filtering on every pool (each trace confidence x keep 10/50/90%, confidence-
   weighted vote): same tokens as best-of-N, accuracy only;
3. replays DeepConf online on random orders of every pool over a grid (window, eta, warm-up, round size,
   consensus): a trace is cut where its window falls below the warm-up's threshold, sampling stops at consensus;
   this chooses the most accurate configuration with at least 40% fewer tokens than best-of-N (else the
   cheapest within 1 point of its accuracy);
4. runs DeepConf online for real through /v1/solve (strategy `deepconf`, traces stopped inside the engine) with
   the strategy's defaults and, if different, with the configuration step 3 chose: completion tokens, eFLOPs
   (the service's own accounting, as charged to the budget), accuracy, traces stopped in the engine.

Ends with one JSON line; every row goes to loadtests/results/deepconf/.

    .venv/bin/python -m loadtests.deepconf --quick      # a few minutes
    .venv/bin/python -m loadtests.deepconf              # the full run (see --help for sizes)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from loadtests.fit_profiles import SPEC, CostModel, Problem, post, problem_set, solve_body
from loadtests.harness import ROOT, print_result, running_service
from service.runtime.cost import generation_eflops
from strategies.base import Candidate
from strategies.confidence import (
    METRICS,
    Metric,
    TraceConfidence,
    consensus,
    group_confidences,
    keep_threshold,
    keep_top,
    token_confidence,
    weighted_votes,
)
from strategies.deepconf import DeepConfParams
from strategies.selection import select
from verifiers.answers import answers_equal, extract_answer

RESULTS = ROOT / "loadtests" / "results" / "deepconf"
TOP_K = 20
TEMPERATURE = 0.8


@dataclass
class TracePool:
    """N sampled traces of one problem with their token confidences."""

    problem: Problem
    answers: list[str | None]
    confidences: list[list[float]]
    prompt_tokens: int
    cached_prompt_tokens: int
    eflops: float  # the service's accounting of the one call
    eflops_no_weights: float  # the Kinetics paper's (weight loading dropped) of the same call
    groups: dict[int, list[list[float]]] = field(default_factory=dict)

    @property
    def lengths(self) -> list[int]:
        return [len(c) for c in self.confidences]

    def correct(self, answer: str | None) -> bool:
        return answer is not None and answers_equal(answer, self.problem.answer, SPEC)

    def windows(self, window: int) -> list[list[float]]:
        if window not in self.groups:
            self.groups[window] = [group_confidences(c, window) for c in self.confidences]
        return self.groups[window]


def vote(answers: list[str | None], weights: list[float], keep: list[bool]) -> str | None:
    """The service's selection over the kept traces (strategies.selection.select, weighted by confidence)."""
    candidates = [
        Candidate("", answer, score=weight)
        for answer, weight, kept in zip(answers, weights, keep, strict=True)
        if kept and answer is not None
    ]
    chosen = select(candidates, "weighted")
    return chosen.answer if chosen else None


# -- 1. pools ----------------------------------------------------------------------------------------------


async def collect(
    url: str, problems: list[Problem], n: int, concurrency: int, cost: CostModel
) -> list[TracePool]:
    gate = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, problem: Problem) -> TracePool:
        body = {
            "messages": problem.messages(),
            "n": n,
            "max_tokens": problem.max_tokens,
            "temperature": TEMPERATURE,
            "logprobs": True,
            "top_logprobs": TOP_K,
        }
        async with gate:
            response = await client.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        data = response.json()
        answers, confidences = [], []
        for choice in data["choices"]:
            answers.append(extract_answer(choice["message"]["content"] or "", SPEC))
            content = (choice.get("logprobs") or {}).get("content") or []
            confidences.append(
                [token_confidence([t["logprob"] for t in entry["top_logprobs"]], TOP_K) for entry in content]
            )
        usage = data["usage"]
        prompt, cached = (
            usage["prompt_tokens"],
            (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
        )
        lengths = [len(c) for c in confidences]
        return TracePool(
            problem,
            answers,
            confidences,
            prompt,
            cached or 0,
            generation_eflops(cost.shape, cost.hardware, prompt, cached or 0, lengths, cost.weights),
            generation_eflops(cost.shape, cost.hardware, prompt, cached or 0, lengths, False),
        )

    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        return list(await asyncio.gather(*(one(client, problem) for problem in problems)))


# -- 2. offline filtering ------------------------------------------------------------------------------


def offline(pools: list[TracePool], window: int, tail: int) -> list[dict[str, Any]]:
    rows = []
    for metric, eta in itertools.product(METRICS, (10.0, 50.0, 90.0, 100.0)):
        hits = 0
        for pool in pools:
            values = [TraceConfidence.of(c, window, tail).get(metric) for c in pool.confidences]
            hits += pool.correct(vote(pool.answers, values, keep_top(values, eta)))
        rows.append({"metric": metric, "keep_percent": eta, "accuracy": hits / len(pools)})
    return rows


# -- 3. online, replayed ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Online:
    window: int
    keep_percent: float
    warmup: int
    round_size: int
    consensus: float = 0.95
    metric: Metric = "lowest_group"

    def params(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "keep_percent": self.keep_percent,
            "warmup": self.warmup,
            "round_size": self.round_size,
            "consensus": self.consensus,
            "metric": self.metric,
        }


def replay_online(pool: TracePool, order: list[int], config: Online, tail: int) -> tuple[bool, int]:
    """What strategies/deepconf.py's online mode does on these traces in this order: (correct, tokens)."""
    groups = pool.windows(config.window)
    warm = order[: config.warmup]
    threshold = keep_threshold([min(groups[i], default=0.0) for i in warm], config.keep_percent)
    tokens = sum(pool.lengths[i] for i in warm)
    drawn: list[tuple[int, bool]] = [(i, True) for i in warm]  # (trace, finished)

    def tally() -> tuple[list[str | None], list[float], list[bool]]:
        answers = [pool.answers[i] for i, _ in drawn]
        weights = [
            TraceConfidence.of(pool.confidences[i], config.window, tail).get(config.metric) for i, _ in drawn
        ]
        return answers, weights, [done for _, done in drawn]

    position = config.warmup
    while True:
        answers, weights, keep = tally()
        kept_answers = [a for a, k in zip(answers, keep, strict=True) if k]
        kept_weights = [w for w, k in zip(weights, keep, strict=True) if k]
        if consensus(weighted_votes(kept_answers, kept_weights))[1] >= config.consensus:
            break
        if position >= len(order):
            break
        for i in order[position : position + config.round_size]:
            # the window starting at `start` is complete after token start + window; the last token ends
            # the trace (the engine's final piece is never stopped)
            length, window = pool.lengths[i], config.window
            cut = next(
                (
                    start + window
                    for start, value in enumerate(groups[i])
                    if value < threshold and start + window < length
                ),
                None,
            )
            tokens += cut if cut is not None else pool.lengths[i]
            drawn.append((i, cut is None))
        position += config.round_size
    answers, weights, keep = tally()
    return pool.correct(vote(answers, weights, keep)), tokens


def online_grid(pools: list[TracePool], replays: int, seed: int, tail: int, n: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    orders = [
        [rng.sample(range(len(pool.answers)), len(pool.answers)) for _ in range(replays)] for pool in pools
    ]
    rows = []
    grid = itertools.product((4, 8, 16), (10.0, 50.0, 90.0), (2, 3, 4), (2, 4), (0.7, 0.8, 0.95))
    for window, eta, warmup, round_size, level in grid:
        if warmup > n:
            continue
        config = Online(window, eta, warmup, round_size, level)
        hits = tokens = 0.0
        for pool, pool_orders in zip(pools, orders, strict=True):
            for order in pool_orders:
                ok, spent = replay_online(pool, order, config, tail)
                hits += ok / replays
                tokens += spent / replays
        rows.append({**config.params(), "accuracy": hits / len(pools), "mean_tokens": tokens / len(pools)})
    return rows


# -- 4. online, for real ---------------------------------------------------------------------------------


async def run_online(
    url: str, problems: list[Problem], n: int, params: dict[str, Any], concurrency: int, cost: CostModel
) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, problem: Problem) -> dict[str, Any]:
        body = solve_body(problem, {"tokens": 1_000_000}, {"n": n, **params}, strategy="deepconf")
        body["sampling"]["temperature"] = TEMPERATURE
        async with gate:
            result = await post(client, body)
        details, usage = result["details"], result["usage"]
        # Kinetics without weight loading (the paper's version), from the traces: the warm-up is one call, each
        # later trace its own call whose prompt the prefix cache holds (whole 32-token blocks)
        prompt = usage["prompt_tokens"] // max(usage["engine_requests"], 1)
        warm = [t["tokens"] for t in details["traces"] if t["phase"] == "warmup"]
        no_weights = generation_eflops(cost.shape, cost.hardware, prompt, 0, warm, False)
        for trace in details["traces"]:
            if trace["phase"] == "online":
                no_weights += generation_eflops(
                    cost.shape, cost.hardware, prompt, prompt // 32 * 32, [trace["tokens"]], False
                )
        return {
            "family": problem.family,
            "correct": answers_equal(result["answer"], problem.answer, SPEC),
            "tokens": usage["completion_tokens"],
            "eflops": usage["eflops"],
            "eflops_no_weights": no_weights,
            "engine_requests": usage["engine_requests"],
            "engine_requests_stopped": usage["engine_requests_stopped"],
            "traces_drawn": details["traces_drawn"],
            "traces_stopped": details["traces_stopped"],
            "stopped_because": details["stopped_because"],
            "saved_fraction_estimate": details["saved_fraction_estimate"],
        }

    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        return list(await asyncio.gather(*(one(client, problem) for problem in problems)))


def summary(rows: list[dict[str, Any]], key: str = "correct") -> dict[str, Any]:
    count = len(rows)
    out: dict[str, Any] = {
        "accuracy": round(sum(r[key] for r in rows) / count, 4),
        "tokens_per_problem": round(sum(r["tokens"] for r in rows) / count, 1),
        "eflops_per_problem": sum(r["eflops"] for r in rows) / count,
        "eflops_no_weights_per_problem": sum(r["eflops_no_weights"] for r in rows) / count,
    }
    families: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        families.setdefault(row["family"], []).append(row)
    out["by_family"] = {
        family: {
            "accuracy": round(sum(r[key] for r in group) / len(group), 3),
            "tokens": round(sum(r["tokens"] for r in group) / len(group), 1),
        }
        for family, group in families.items()
    }
    return out


def compare(bon: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    return {
        "token_reduction": round(1 - other["tokens_per_problem"] / bon["tokens_per_problem"], 4),
        "eflops_ratio": round(other["eflops_per_problem"] / bon["eflops_per_problem"], 4),
        "eflops_no_weights_ratio": round(
            other["eflops_no_weights_per_problem"] / bon["eflops_no_weights_per_problem"], 4
        ),
        "accuracy_delta_points": round(100 * (other["accuracy"] - bon["accuracy"]), 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.deepconf",
        description="DeepConf online and offline against majority best-of-N at the same N (arithmetic levels "
        "and GSM8K test): completion tokens, eFLOPs and accuracy per problem.",
    )
    parser.add_argument("--url", help="a running service (default: start one)")
    parser.add_argument(
        "--per-family", type=int, default=16, help="problems per arithmetic family (4 families)"
    )
    parser.add_argument("--gsm8k", type=int, default=32, help="GSM8K test problems")
    parser.add_argument("--n", type=int, default=16, help="N: samples of best-of-N, most traces of DeepConf")
    parser.add_argument(
        "--replays", type=int, default=10, help="random orders per pool for the online replay"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a small run (a few minutes)")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_family, args.gsm8k, args.n, args.replays = 3, 3, 8, 4
    defaults = DeepConfParams()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with running_service(args.url, RESULTS) as url:
        cost = CostModel.from_service(httpx.get(f"{url}/v1/allocator", timeout=30).json())
        problems = problem_set(args.per_family, args.gsm8k, args.seed, "report")
        started = time.monotonic()
        pools = asyncio.run(collect(url, problems, args.n, args.concurrency, cost))
        pool_seconds = time.monotonic() - started
        (RESULTS / "pools.json").write_text(
            json.dumps(
                [
                    {
                        "problem": pool.problem.__dict__,
                        "answers": pool.answers,
                        "confidences": pool.confidences,
                    }
                    for pool in pools
                ]
            )
        )
        bon_rows = [
            {
                "family": pool.problem.family,
                "correct": pool.correct(
                    vote(pool.answers, [1.0] * len(pool.answers), [True] * len(pool.answers))
                ),
                "tokens": sum(pool.lengths),
                "eflops": pool.eflops,
                "eflops_no_weights": pool.eflops_no_weights,
            }
            for pool in pools
        ]
        # the vote above is weighted by 1.0 each: plain majority (ties as the service breaks them)
        bon = summary(bon_rows)
        print(f"pools: {len(pools)} problems x {args.n} samples in {pool_seconds:.0f} s", flush=True)
        print(f"best-of-N majority: {json.dumps({k: v for k, v in bon.items() if k != 'by_family'})}")

        offline_rows = offline(pools, defaults.window, defaults.tail)
        best_offline = max(offline_rows, key=lambda r: (r["accuracy"], r["keep_percent"]))
        default_offline = next(
            r
            for r in offline_rows
            if r["metric"] == defaults.metric and r["keep_percent"] == defaults.keep_percent
        )
        print("offline filtering (accuracy; tokens as best-of-N):")
        for row in offline_rows:
            print(f"  {row['metric']:>12} keep {row['keep_percent']:>5.0f}%: {row['accuracy']:.3f}")

        grid = online_grid(pools, args.replays, args.seed, defaults.tail, args.n)
        # the target: at least 40% fewer tokens than best-of-N at no more than 1 point lower accuracy; the most
        # accurate replayed configuration that saves 40%, else the cheapest within the accuracy floor
        floor = bon["accuracy"] - 0.01
        saving = [row for row in grid if row["mean_tokens"] <= 0.6 * bon["tokens_per_problem"]]
        eligible = [row for row in grid if row["accuracy"] >= floor]
        if saving:
            chosen = max(saving, key=lambda r: (r["accuracy"], -r["mean_tokens"]))
        elif eligible:
            chosen = min(eligible, key=lambda r: (r["mean_tokens"], -r["accuracy"]))
        else:
            chosen = max(grid, key=lambda r: (r["accuracy"], -r["mean_tokens"]))
        print("online, replayed (accuracy, tokens per problem):")
        for row in sorted(grid, key=lambda r: r["mean_tokens"]):
            keys = ("window", "keep_percent", "warmup", "round_size", "consensus")
            label = ", ".join(f"{k}={row[k]}" for k in keys)
            print(f"  {label}: {row['accuracy']:.3f}, {row['mean_tokens']:.1f}")
        default_params = {
            k: getattr(defaults, k)
            for k in ("window", "keep_percent", "warmup", "round_size", "consensus", "metric")
        }
        chosen_params = {k: chosen[k] for k in default_params}

        real: dict[str, Any] = {}
        configs = {"defaults": default_params}
        if chosen_params != default_params:
            configs["replay_choice"] = chosen_params
        for name, params in configs.items():
            started = time.monotonic()
            rows = asyncio.run(run_online(url, problems, args.n, params, args.concurrency, cost))
            figures = summary(rows)
            figures.update(compare(bon, figures))
            figures["params"] = params
            figures["seconds"] = round(time.monotonic() - started, 1)
            figures["traces_stopped_per_problem"] = round(
                sum(r["traces_stopped"] for r in rows) / len(rows), 2
            )
            figures["engine_requests_stopped"] = sum(r["engine_requests_stopped"] for r in rows)
            figures["stopped_at_consensus"] = sum(r["stopped_because"] == "consensus" for r in rows)
            figures["traces_per_problem"] = round(sum(r["traces_drawn"] for r in rows) / len(rows), 2)
            real[name] = figures
            print(
                f"online ({name}) for real: {json.dumps({k: v for k, v in figures.items() if k != 'by_family'})}"
            )
            (RESULTS / f"online_{name}.json").write_text(json.dumps(rows, indent=1))

    headline = real["defaults"]
    result = {
        "benchmark": "deepconf",
        "problems": len(pools),
        "n": args.n,
        "best_of_n_majority": {
            k: bon[k]
            for k in ("accuracy", "tokens_per_problem", "eflops_per_problem", "eflops_no_weights_per_problem")
        },
        "online": {
            name: {k: v for k, v in figures.items() if k != "by_family"} for name, figures in real.items()
        },
        "offline": {
            "default": default_offline,
            "best": best_offline,
            "accuracy_delta_points_default": round(100 * (default_offline["accuracy"] - bon["accuracy"]), 2),
        },
        "replay_choice": chosen,
        "target_met": headline["token_reduction"] >= 0.4 and headline["accuracy_delta_points"] >= -1.0,
        "by_family": {"best_of_n": bon["by_family"], "online_defaults": headline["by_family"]},
    }
    print_result(result, RESULTS / "result.json")


if __name__ == "__main__":
    main()

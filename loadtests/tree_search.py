"""Tree searches side by side: beam search, DVTS, REBASE and ETS at several widths, best-of-N as reference.

One run, one verifier, one fixed task set (two-digit addition and a GSM8K test sample). For every width and
method, all problems are sent to `/v1/solve` at once (bounded by --concurrency) so the engine stays busy, and
the batch's wall time gives problems per minute and generated tokens per second. Per method it reports
accuracy, average and peak KV tokens of the live tree (prompt included; best-of-N: prompt plus its N samples),
the engine's prefix-cache hit rate, completion tokens, eFLOPs (the budget's and the tree's own count that reads
each distinct node's KV once), and ETS's solve times against step generation times. Then it checks ETS against
REBASE at the same width (the ETS paper's claims) and plots accuracy against eFLOPs.

Methods run in a rotated order per width, so no method always comes first to a cold prefix cache.

Sizes: the defaults (80 addition + 20 GSM8K problems, widths 4, 8, 16, GSM8K solutions up to 192 tokens in
steps of at most 48, depth <= 6, every problem in flight at once) are the full run: 20 minutes on two quiet CPU
cores with TTC_KV_CACHE_GIB=4 (the default 1 GiB holds fewer than width-16 x 100 problems' trees, and vLLM
then preempts and recomputes). `--quick` (5 problems, width 4) checks the harness in 2-3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadtests.harness import ROOT, percentile, print_result, running_service
from verifiers.answers import AnswerSpec, answers_equal

GSM8K_TEST = Path("/work/shared/data/gsm8k/test.jsonl")
RESULTS = ROOT / "loadtests" / "results" / "tree_search"
NUMBER = AnswerSpec("number")
METHODS = ("best_of_n", "beam_search", "dvts", "rebase", "ets")
ADDITION_PROMPT = "What is {a} + {b}? Answer with just the number."
GSM8K_PROMPT = "{question}\nSolve it step by step, one short step per paragraph, then write the final answer after '####'."


@dataclass
class Problem:
    dataset: str
    prompt: str
    gold: str
    max_tokens: int


@dataclass
class Outcome:
    correct: bool
    usage: dict[str, Any]
    details: dict[str, Any]
    seconds: float
    error: str | None = None
    dataset: str = ""


@dataclass
class Batch:
    """One method at one width over every problem."""

    method: str
    width: int
    outcomes: list[Outcome] = field(default_factory=list)
    wall_seconds: float = 0.0


def addition_problems(count: int, seed: int) -> list[Problem]:
    rng = random.Random(seed)
    problems = []
    for _ in range(count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        problems.append(Problem("addition", ADDITION_PROMPT.format(a=a, b=b), str(a + b), 32))
    return problems


def gsm8k_problems(count: int, seed: int, max_tokens: int, path: Path = GSM8K_TEST) -> list[Problem]:
    lines = path.read_text().splitlines()
    problems = []
    for line in random.Random(seed).sample(lines, min(count, len(lines))):
        row = json.loads(line)
        gold = row["answer"].split("####")[-1].strip().replace(",", "")
        problems.append(Problem("gsm8k", GSM8K_PROMPT.format(question=row["question"]), gold, max_tokens))
    return problems


def request_body(
    problem: Problem, method: str, width: int, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    if method == "best_of_n":
        params: dict[str, Any] = {"n": width, "selection": "weighted"}
    else:
        params = {"width": width, "max_depth": args.max_depth, "step_tokens": args.step_tokens}
        if method in ("beam_search", "dvts"):
            params["beam_width"] = min(args.beam_width, width)
        if method == "ets":
            params.update(json.loads(args.ets_params))
    return {
        "prompt": problem.prompt,
        "strategy": method,
        "verifier": {"name": args.verifier},
        "params": params,
        "sampling": {"max_tokens": problem.max_tokens, "temperature": args.temperature, "seed": seed},
        "budget": {"seconds": args.request_seconds},
        "answer": {"type": "number"},
    }


async def solve(client: httpx.AsyncClient, body: dict[str, Any], gold: str) -> tuple[Outcome, dict[str, Any]]:
    """One /v1/solve call as an Outcome (a failure is recorded, not raised) and the response ({} on failure)."""
    started = time.perf_counter()
    try:
        response = await client.post("/v1/solve", json=body)
    except httpx.HTTPError as exc:
        return Outcome(False, {}, {}, time.perf_counter() - started, repr(exc)[:300]), {}
    if response.status_code != 200:
        return Outcome(False, {}, {}, time.perf_counter() - started, response.text[:300]), {}
    data = response.json()
    correct = answers_equal(data["answer"], gold, NUMBER)
    return Outcome(correct, data["usage"], data.get("details", {}), time.perf_counter() - started), data


async def run_batch(
    client: httpx.AsyncClient, problems: list[Problem], method: str, width: int, args: argparse.Namespace
) -> Batch:
    limit = asyncio.Semaphore(args.concurrency or len(problems))

    async def one(index: int, problem: Problem) -> Outcome:
        async with limit:
            body = request_body(problem, method, width, args, args.seed + index)
            outcome, _ = await solve(client, body, problem.gold)
            outcome.dataset = problem.dataset
            return outcome

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one(index, problem) for index, problem in enumerate(problems)))
    return Batch(method, width, list(outcomes), time.perf_counter() - started)


def summarize(batch: Batch) -> dict[str, Any]:
    done = [outcome for outcome in batch.outcomes if outcome.error is None]
    usage = [outcome.usage for outcome in done]
    details = [outcome.details for outcome in done]

    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else 0.0

    peak = [float(u["peak_kv_tokens"]) for u in usage]
    # A tree search reports its mean live tree over depths; best-of-N holds prompt + N samples at its end.
    avg_kv = [float(d.get("avg_kv_tokens", u["peak_kv_tokens"])) for d, u in zip(details, usage, strict=True)]
    prompt = sum(u["prompt_tokens"] for u in usage)
    cached = sum(u["cached_prompt_tokens"] for u in usage)
    completion = sum(u["completion_tokens"] for u in usage)
    lp = [seconds for d in details for seconds in d.get("lp_seconds", [])]
    steps = [seconds for d in details for seconds in d.get("step_seconds", [])]
    minutes = batch.wall_seconds / 60
    by_dataset = {}
    for dataset in sorted({outcome.dataset for outcome in batch.outcomes}):
        # Like the totals: a failed request counts as wrong, and only answered ones have a tree to measure.
        outcomes = [outcome for outcome in batch.outcomes if outcome.dataset == dataset]
        kv = [value for outcome, value in zip(done, avg_kv, strict=True) if outcome.dataset == dataset]
        by_dataset[dataset] = {
            "problems": len(outcomes),
            "accuracy": round(mean([float(outcome.correct) for outcome in outcomes]), 4),
            "avg_kv_tokens": round(mean(kv), 1),
        }
    return {
        "method": batch.method,
        "width": batch.width,
        "problems": len(batch.outcomes),
        "errors": len(batch.outcomes) - len(done),
        "first_error": next((outcome.error for outcome in batch.outcomes if outcome.error), None),
        "accuracy": round(mean([float(outcome.correct) for outcome in batch.outcomes]), 4),
        "avg_kv_tokens": round(mean(avg_kv), 1),
        "peak_kv_tokens": round(mean(peak), 1),
        "max_peak_kv_tokens": int(max(peak, default=0)),
        "prefix_cache_hit_rate": round(cached / prompt, 4) if prompt else 0.0,
        "completion_tokens": round(completion / max(len(done), 1), 1),
        "eflops": mean([float(u["eflops"]) for u in usage]),
        "tree_eflops": mean([float(d["tree_eflops"]) for d in details if "tree_eflops" in d]) or None,
        "problems_per_minute": round(len(done) / minutes, 3) if minutes else 0.0,
        "generated_tokens_per_second": round(completion / batch.wall_seconds, 2)
        if batch.wall_seconds
        else 0.0,
        "wall_seconds": round(batch.wall_seconds, 2),
        "lp_p50_seconds": percentile(lp, 0.5) if lp else None,
        "lp_p95_seconds": percentile(lp, 0.95) if lp else None,
        "step_p50_seconds": percentile(steps, 0.5) if steps else None,
        "lp_fraction_of_step_time": round(sum(lp) / sum(steps), 5) if lp and steps else None,
        "lp_fallbacks": sum(int(d.get("lp_fallbacks", 0)) for d in details),
        "by_dataset": by_dataset,
    }


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ETS paper's claims, per width: ETS against REBASE, and search throughput against best-of-N."""
    by = {(row["method"], row["width"]): row for row in rows}
    checks: list[dict[str, Any]] = []
    for width in sorted({row["width"] for row in rows}):
        ets, rebase, bon = by.get(("ets", width)), by.get(("rebase", width)), by.get(("best_of_n", width))
        if ets and rebase:
            kv_ratio = rebase["avg_kv_tokens"] / ets["avg_kv_tokens"] if ets["avg_kv_tokens"] else None
            ppm_ratio = (
                ets["problems_per_minute"] / rebase["problems_per_minute"]
                if rebase["problems_per_minute"]
                else None
            )
            drop = rebase["accuracy"] - ets["accuracy"]
            for dataset, part in ets.get("by_dataset", {}).items():
                other = rebase.get("by_dataset", {}).get(dataset)
                if other and part["avg_kv_tokens"]:
                    checks.append(
                        {
                            "width": width,
                            "target": f"(informational) {dataset} only: rebase avg KV / ets avg KV",
                            "value": other["avg_kv_tokens"] / part["avg_kv_tokens"],
                            "met": None,
                        }
                    )
            checks += [
                {
                    "width": width,
                    "target": "rebase avg KV / ets avg KV >= 1.8",
                    "value": kv_ratio,
                    "met": kv_ratio is not None and kv_ratio >= 1.8,
                },
                {
                    "width": width,
                    "target": "ets / rebase problems per minute >= 1.4",
                    "value": ppm_ratio,
                    "met": ppm_ratio is not None and ppm_ratio >= 1.4,
                },
                {
                    "width": width,
                    "target": "ets accuracy >= rebase accuracy - 0.02",
                    "value": -drop,
                    "met": drop <= 0.02 + 1e-9,
                },
            ]
        if ets and ets["lp_p95_seconds"] is not None and ets["step_p50_seconds"]:
            share = ets["lp_p95_seconds"] / ets["step_p50_seconds"]
            checks.append(
                {
                    "width": width,
                    "target": "ets LP p95 < 5% of a step's generation time",
                    "value": share,
                    "met": share < 0.05,
                }
            )
        for method, row in (("ets", ets), ("rebase", rebase)):
            if row and bon and bon["generated_tokens_per_second"]:
                ratio = row["generated_tokens_per_second"] / bon["generated_tokens_per_second"]
                checks.append(
                    {
                        "width": width,
                        "target": f"{method} generated tokens/s >= 0.8x best-of-N",
                        "value": ratio,
                        "met": ratio >= 0.8,
                    }
                )
    for check in checks:
        if isinstance(check["value"], float):
            check["value"] = round(check["value"], 4)
    return checks


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 5))
    for method in METHODS:
        points = sorted(
            (row["eflops"], row["accuracy"], row["width"]) for row in rows if row["method"] == method
        )
        if not points:
            continue
        style = "k--o" if method == "best_of_n" else "-o"
        axis.plot([p[0] for p in points], [100 * p[1] for p in points], style, label=method)
        for x, y, width in points:
            axis.annotate(f"{width}", (x, 100 * y), textcoords="offset points", xytext=(3, 4), fontsize=7)
    axis.set_xscale("log")
    axis.set_ylim(-2, 102)
    axis.set_xlabel("eFLOPs per problem (mean, Kinetics model, verifier included)")
    axis.set_ylabel("accuracy (%)")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'method':<12}{'W':>4}{'acc':>7}{'avgKV':>9}{'peakKV':>9}{'hit':>7}{'compl':>8}{'eFLOPs':>11}"
        f"{'prob/min':>10}{'tok/s':>8}{'LPp50':>8}{'LPp95':>8}{'LP/step':>9}"
    )
    print(header)
    print("-" * len(header))

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for row in rows:
        print(
            f"{row['method']:<12}{row['width']:>4}{row['accuracy']:>7.3f}{row['avg_kv_tokens']:>9.0f}"
            f"{row['peak_kv_tokens']:>9.0f}{row['prefix_cache_hit_rate']:>7.2f}{row['completion_tokens']:>8.0f}"
            f"{row['eflops']:>11.3g}{row['problems_per_minute']:>10.2f}{row['generated_tokens_per_second']:>8.1f}"
            f"{fmt(row['lp_p50_seconds'], '.3f'):>8}{fmt(row['lp_p95_seconds'], '.3f'):>8}"
            f"{fmt(row['lp_fraction_of_step_time'], '.4f'):>9}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.tree_search",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--url", help="Use this running service instead of starting one.")
    parser.add_argument("--quick", action="store_true", help="Tiny run to check the harness (~3-5 min).")
    parser.add_argument("--addition", type=int, default=80, help="Two-digit addition problems.")
    parser.add_argument("--gsm8k", type=int, default=20, help="GSM8K test problems (seeded sample).")
    parser.add_argument("--widths", default="4,8,16", help="Comma-separated widths (N for best-of-N).")
    parser.add_argument("--methods", default=",".join(METHODS), help="Comma-separated methods.")
    parser.add_argument("--verifier", default="calculator", help="The verifier every method uses.")
    parser.add_argument("--max-depth", type=int, default=6, help="Most steps per solution.")
    parser.add_argument("--step-tokens", type=int, default=48, help="Longest step, in tokens.")
    parser.add_argument("--beam-width", type=int, default=4, help="M of beam search and DVTS.")
    parser.add_argument("--gsm8k-tokens", type=int, default=192, help="max_tokens of a GSM8K solution.")
    parser.add_argument("--temperature", type=float, default=0.8, help="Sampling temperature.")
    parser.add_argument("--concurrency", type=int, default=0, help="Requests in flight; 0 = all problems.")
    parser.add_argument("--request-seconds", type=float, default=600, help="Each request's seconds budget.")
    parser.add_argument(
        "--ets-params", default="{}", help="Extra ETS params as JSON, e.g. '{\"lambda_s\": 0.5}'."
    )
    parser.add_argument(
        "--no-warmup", action="store_true", help="Skip the untimed warm-up request per method."
    )
    parser.add_argument("--seed", type=int, default=1234, help="Problem choice and sampling seed.")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Where the PNG and JSON go.")
    args = parser.parse_args(argv)
    if args.quick:
        args.addition, args.gsm8k, args.widths = 3, 2, "4"
        args.max_depth, args.gsm8k_tokens = 4, 96
    return args


async def benchmark(url: str, args: argparse.Namespace) -> dict[str, Any]:
    problems = addition_problems(args.addition, args.seed) + gsm8k_problems(
        args.gsm8k, args.seed, args.gsm8k_tokens
    )
    widths = [int(width) for width in args.widths.split(",") if width]
    methods = [method for method in args.methods.split(",") if method]
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url, timeout=args.request_seconds + 120) as client:
        if not args.no_warmup:  # loads ETS's embedding model and warms every path before anything is timed
            await asyncio.gather(
                *(run_batch(client, problems[:1], method, widths[0], args) for method in methods)
            )
        for position, width in enumerate(widths):
            order = methods[position % len(methods) :] + methods[: position % len(methods)]
            for method in order:
                batch = await run_batch(client, problems, method, width, args)
                row = summarize(batch)
                rows.append(row)
                print(
                    f"  {method} W={width}: accuracy {row['accuracy']:.3f}, {row['wall_seconds']:.1f} s, "
                    f"avg KV {row['avg_kv_tokens']:.0f}, errors {row['errors']}",
                    flush=True,
                )
    rows.sort(
        key=lambda row: (row["width"], METHODS.index(row["method"]) if row["method"] in METHODS else 99)
    )
    return {"problems": len(problems), "widths": widths, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with running_service(args.url, args.out) as url:
        started = time.perf_counter()
        result = asyncio.run(benchmark(url, args))
        seconds = time.perf_counter() - started
    rows = result["rows"]
    checks = check_targets(rows)
    print()
    print_table(rows)
    print()
    for check in checks:
        print(
            f"W={check['width']:<3} {'    ' if check['met'] is None else 'MET ' if check['met'] else 'MISS'} "
            f"{check['target']}: {check['value']}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    plot_path = args.out / "accuracy_vs_eflops.png"
    plot(rows, plot_path, f"accuracy vs eFLOPs ({result['problems']} problems, verifier {args.verifier})")
    summary = {
        "benchmark": "tree_search",
        "problems": result["problems"],
        "addition": args.addition,
        "gsm8k": args.gsm8k,
        "widths": result["widths"],
        "verifier": args.verifier,
        "seconds": round(seconds, 1),
        "methods": rows,
        "targets": checks,
        "targets_met": all(check["met"] for check in checks if check["met"] is not None) if checks else None,
        "plot": str(plot_path),
    }
    print(f"\nplot: {plot_path}")
    print_result(summary, args.out / "result.json")


if __name__ == "__main__":
    main()

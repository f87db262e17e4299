"""The batch allocator (POST /v1/solve/batch) against uniform best-of-N and per-prompt `auto`, at equal total eFLOPs.

Problems: the report split of the allocator benchmark's mixed set (one-, two- and three-digit addition,
one-digit multiplication, GSM8K test), so nothing here was fitted on them: the difficulty profile `auto` and
the batch allocator read (strategies/allocation/profiles/best_of_n.json) was fitted on the fit split
(another seed, GSM8K train), and the allocator's knobs are their defaults. In one run it

1. draws a pool of --pool samples per problem (one best-of-N call each) and prices uniform best-of-N
   (majority) at N = 1, 2, 4, ... by replaying random subsets of each pool, with the service's own eFLOPs
   accounting (loadtests/allocator.py's fixed_policies);
2. for each N in --budgets, takes uniform best-of-N's total eFLOPs over the set as ONE budget and runs
   - the batch allocator: one POST /v1/solve/batch job over every problem with that total as its eFLOPs cap;
   - per-prompt `auto`: every problem on its own with an equal share of that total as its eFLOPs cap;
3. compares accuracy at equal total eFLOPs, and the eFLOPs the batch allocator needs to reach uniform
   best-of-N's best accuracy; plots accuracy against total eFLOPs; ends with one JSON line.

    .venv/bin/python -m loadtests.batch_allocation --quick        # a couple of minutes
    .venv/bin/python -m loadtests.batch_allocation                # 200 problems (see --help)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from loadtests.allocator import fixed_policies, interpolate
from loadtests.fit_profiles import (
    SPEC,
    CostModel,
    Pool,
    Problem,
    collect_pools,
    load_tokenizer,
    post,
    problem_set,
    solve_body,
)
from loadtests.harness import ROOT, print_result, running_service
from verifiers.answers import answers_equal

RESULTS = ROOT / "loadtests" / "results" / "batch_allocation"
FAMILIES = ("add1", "mul", "add2", "add3", "gsm8k")


def report_problems(total: int, gsm8k_share: float, seed: int) -> list[Problem]:
    """`total` problems of the report split: GSM8K's share, the rest spread evenly over the arithmetic."""
    gsm = round(total * gsm8k_share)
    per_family = max((total - gsm) // 4, 1)
    problems = problem_set(per_family, gsm, seed, "report")
    return problems[:total]


def batch_problem(problem: Problem) -> dict[str, Any]:
    return {
        "id": problem.id,
        "prompt": problem.question,
        "sampling": {"max_tokens": problem.max_tokens},
        "reference_answer": problem.answer,
    }


def run_batch(url: str, problems: list[Problem], total_eflops: float, timeout: float) -> dict[str, Any]:
    """One batch job over every problem under `total_eflops`; its result and wall time."""
    body = {
        "problems": [batch_problem(problem) for problem in problems],
        "budget": {"eflops": total_eflops, "seconds": timeout},
        # at uniform BoN4's actual spend the expected cost of one sample everywhere is close to the cap; with
        # abstention allowed the batch is never refused, and a problem it could not pay is reported as unfunded
        "allocation": {"allow_abstain": True},
    }
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=120) as client:
        accepted = client.post("/v1/solve/batch", json=body)
        accepted.raise_for_status()
        job_id = accepted.json()["id"]
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(1.0)
    if job["status"] != "succeeded":
        raise RuntimeError(f"batch job {job_id} {job['status']}: {job.get('error')}")
    result: dict[str, Any] = job["result"]
    samples: dict[str, list[int]] = {}
    for row in result["problems"]:
        samples.setdefault(row["id"].split("-")[0], []).append(row["samples"])
    return {
        "accuracy": result["summary"]["accuracy"],
        "total_eflops": result["usage"]["eflops"],
        "cap": total_eflops,
        "samples": result["summary"]["samples"],
        "statuses": result["summary"]["statuses"],
        "mean_samples_by_family": {f: round(sum(v) / len(v), 2) for f, v in samples.items()},
        "rounds": result["summary"]["rounds"],
        "seconds": round(time.monotonic() - started, 1),
    }


async def run_auto(url: str, problems: list[Problem], cap_each: float, concurrency: int) -> dict[str, Any]:
    """Per-prompt `auto`, every problem under an equal share of the total (no memory of past prompts)."""
    gate = asyncio.Semaphore(concurrency)
    memory = f"batch-bench-{uuid.uuid4().hex[:8]}"

    async def one(client: httpx.AsyncClient, problem: Problem) -> tuple[bool, float, int]:
        body = solve_body(
            problem, {"eflops": cap_each}, {"memory": memory, "remember": False, "neighbours": False}
        )
        body["return_candidates"] = True
        async with gate:
            try:
                result = await post(client, body)
            except RuntimeError as exc:  # refused (a cap below one sample): counted as a wrong answer
                print(f"  auto refused {problem.id}: {exc}", flush=True)
                return False, 0.0, 0
        correct = answers_equal(result["answer"], problem.answer, SPEC)
        return correct, float(result["usage"]["eflops"]), len(result.get("candidates") or [])

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        rows = await asyncio.gather(*(one(client, problem) for problem in problems))
    return {
        "accuracy": sum(ok for ok, _, _ in rows) / len(rows),
        "total_eflops": sum(eflops for _, eflops, _ in rows),
        "cap": cap_each * len(rows),
        "samples": sum(n for _, _, n in rows),
        "seconds": round(time.monotonic() - started, 1),
    }


def plot(
    bon: list[dict[str, Any]], batches: list[dict[str, Any]], autos: list[dict[str, Any]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(
        [p["total_eflops"] for p in bon], [p["accuracy"] for p in bon], marker="o", label="uniform best-of-N"
    )
    for p in bon:
        axes.annotate(f"N={p['n']}", (p["total_eflops"], p["accuracy"]), fontsize=7)
    axes.plot(
        [b["total_eflops"] for b in batches],
        [b["accuracy"] for b in batches],
        marker="*",
        markersize=11,
        label="batch allocator",
    )
    axes.plot(
        [a["total_eflops"] for a in autos],
        [a["accuracy"] for a in autos],
        marker="P",
        label="per-prompt auto",
    )
    for b in batches:
        axes.annotate(b["budget"], (b["total_eflops"], b["accuracy"]), fontsize=7)
    axes.set_xscale("log")
    axes.set_xlabel("total eFLOPs over the set")
    axes.set_ylabel("accuracy (report split)")
    axes.set_title("One budget for many prompts")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.batch_allocation",
        description="Batch allocator vs uniform best-of-N (majority) vs per-prompt auto at equal total eFLOPs, "
        "on the report split of the mixed arithmetic + GSM8K set.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--url", help="a running service (default: start one)")
    parser.add_argument("--problems", type=int, default=200, help="problems (report split)")
    parser.add_argument("--gsm8k-share", type=float, default=0.1, help="share of GSM8K problems in the set")
    parser.add_argument("--pool", type=int, default=16, help="samples per problem for uniform best-of-N")
    parser.add_argument("--budgets", default="4,8,16", help="total budgets: uniform best-of-N at these N")
    parser.add_argument("--replays", type=int, default=30, help="random subsets per problem for best-of-N")
    parser.add_argument("--no-auto", dest="auto", action="store_false", help="skip per-prompt auto")
    parser.add_argument("--concurrency", type=int, default=8, help="pool and auto requests in flight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model-dir", type=Path, default=Path.home() / ".cache/ttc-service/models/SmolLM2-135M-Instruct"
    )
    parser.add_argument(
        "--quick", action="store_true", help="40 problems, pool 8, budgets 4,8 (a few minutes)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.problems, args.pool, args.budgets, args.replays = 40, 8, "4,8", 10
    budgets = [int(b) for b in args.budgets.split(",")]
    if max(budgets) > args.pool:
        parser.error("--budgets may not exceed --pool (uniform best-of-N is replayed from the pool)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    problems = report_problems(args.problems, args.gsm8k_share, args.seed)
    count = len(problems)
    # one caller: it may hold every engine sequence, and a pool call waits for them rather than being refused
    env = {"TTC_ADMISSION_KEY_SHARE": "1.0", "TTC_ADMISSION_MAX_WAIT_SECONDS": "900"}
    with running_service(args.url, RESULTS, env) as url:
        cost = CostModel.from_service(httpx.get(f"{url}/v1/allocator", timeout=30).json())
        tokenizer = load_tokenizer(args.model_dir)
        print(
            f"problems: {count} (report split); pool {args.pool}; budgets = uniform BoN{budgets}", flush=True
        )
        t0 = time.monotonic()
        pools: list[Pool] = asyncio.run(
            collect_pools(url, problems, args.pool, False, args.concurrency, cost, tokenizer)
        )
        pool_seconds = time.monotonic() - t0
        print(f"pools drawn in {pool_seconds:.0f} s", flush=True)
        bon = [
            {**p, "total_eflops": p["mean_eflops"] * count}
            for p in fixed_policies(pools, args.replays, args.seed, False, cost)
        ]
        by_n = {p["n"]: p for p in bon}
        batches, autos = [], []
        for n in budgets:
            total = by_n[n]["total_eflops"]
            batch = run_batch(url, problems, total, 3600.0)
            batches.append({"budget": f"BoN{n}", "n": n, **batch})
            print(
                f"batch at BoN{n} ({total:.4g} eFLOPs): accuracy {batch['accuracy']:.3f}, spent "
                f"{batch['total_eflops'] / total:.3f} of the cap, samples by family {batch['mean_samples_by_family']}, "
                f"{batch['seconds']} s",
                flush=True,
            )
            if args.auto:
                auto = asyncio.run(run_auto(url, problems, total / count, args.concurrency))
                autos.append({"budget": f"BoN{n}", "n": n, **auto})
                print(f"auto at BoN{n}: accuracy {auto['accuracy']:.3f}, {auto['seconds']} s", flush=True)

    best = max(bon, key=lambda p: p["accuracy"])
    comparisons = []
    print(f"\n{'policy':28} {'accuracy':>9} {'total eFLOPs':>14}")
    for p in bon:
        print(f"{'uniform best-of-N N=' + str(p['n']):28} {p['accuracy']:9.3f} {p['total_eflops']:14.4g}")
    for batch, auto in zip(batches, autos or [None] * len(batches), strict=True):
        uniform = by_n[batch["n"]]
        totals = [{"mean_eflops": p["total_eflops"], "accuracy": p["accuracy"]} for p in bon]
        at_same = interpolate(totals, batch["total_eflops"])
        row = {
            "budget": batch["budget"],
            "cap_eflops": batch["cap"],
            "uniform_bon_accuracy": round(uniform["accuracy"], 4),
            "batch_accuracy": round(batch["accuracy"], 4),
            "batch_spent_over_cap": round(batch["total_eflops"] / batch["cap"], 4),
            "gain_vs_uniform_bon_at_its_budget": round(batch["accuracy"] - uniform["accuracy"], 4),
            "uniform_bon_at_batch_spend": None if at_same is None else round(at_same, 4),
            "gain_vs_uniform_bon_at_equal_spend": None
            if at_same is None
            else round(batch["accuracy"] - at_same, 4),
            "batch_mean_samples_by_family": batch["mean_samples_by_family"],
            "batch_statuses": batch["statuses"],
            "auto_accuracy": None if auto is None else round(auto["accuracy"], 4),
            "auto_spent_over_cap": None if auto is None else round(auto["total_eflops"] / auto["cap"], 4),
            "gain_vs_auto": None if auto is None else round(batch["accuracy"] - auto["accuracy"], 4),
        }
        comparisons.append(row)
        print(
            f"{'batch allocator ' + batch['budget']:28} {batch['accuracy']:9.3f} {batch['total_eflops']:14.4g}"
        )
        if auto is not None:
            print(
                f"{'per-prompt auto ' + batch['budget']:28} {auto['accuracy']:9.3f} {auto['total_eflops']:14.4g}"
            )
    reach = [b for b in batches if b["accuracy"] >= best["accuracy"]]
    reach_ratio = min(b["total_eflops"] for b in reach) / best["total_eflops"] if reach else None
    gains = [row["gain_vs_uniform_bon_at_its_budget"] for row in comparisons]
    png = RESULTS / "accuracy_vs_total_eflops.png"
    plot(bon, batches, autos, png)
    summary = {
        "benchmark": "batch_allocation",
        "problems": count,
        "families": {f: sum(1 for p in problems if p.family == f) for f in FAMILIES},
        "pool": args.pool,
        "best_uniform_bon": {
            "n": best["n"],
            "accuracy": round(best["accuracy"], 4),
            "total_eflops": best["total_eflops"],
        },
        "comparisons": comparisons,
        "max_gain_vs_uniform_bon": max(gains) if gains else None,
        "batch_eflops_to_reach_best_bon": None if reach_ratio is None else round(reach_ratio, 4),
        "spend_within_cap": all(b["total_eflops"] <= b["cap"] * (1 + 1e-9) for b in batches),
        "targets": {
            "plus_5_points_at_equal_eflops": bool(gains) and max(gains) >= 0.05,
            "best_bon_accuracy_with_quarter_eflops": reach_ratio is not None and reach_ratio <= 0.25,
        },
        "plot": str(png),
        "seconds": round(time.monotonic() - started, 1),
    }
    (RESULTS / "summary.json").write_text(
        json.dumps({"summary": summary, "batches": batches, "autos": autos}, indent=1)
    )
    print_result(summary)


if __name__ == "__main__":
    main()

"""The `auto` budget allocator against fixed best-of-N, side by side on a mixed-difficulty set.

Problems: one-, two- and three-digit addition, one-digit multiplication and GSM8K, split into a fit part
(generated with another seed, GSM8K train) and a report part (GSM8K test). In one run it

1. draws a pool of samples per problem (one best-of-N call, every sample scored by the judge),
2. calibrates the judge on fit problems (POST /v1/verifiers/judge/calibrate, family "mixed"),
3. fits the best-of-N profile on the fit pools (loadtests/fit_profiles.py), and the profiles of every other
   strategy setting in --grid (tree searches, revision) by running each on the fit problems, into a results
   folder that the service it started reads (TTC_ALLOCATOR_PROFILE_DIR),
4. evaluates fixed best-of-N (majority and judge-weighted, N = 1, 2, 4, ...) on the report pools by replaying
   random subsets, priced by the service's own eFLOPs accounting, and runs every --grid setting for real on
   the report problems (the other fixed strategies),
5. runs `auto` for real on the report problems at several per-request eFLOPs caps (the worst case of one
   best-of-B call for that prompt, B in --budgets),

and compares accuracy at equal average eFLOPs, the eFLOPs auto needs to reach best-of-N's best accuracy, the
best fixed strategy in hindsight, predicted against measured accuracy of the chosen plans, and spend against
cap. Every auto request's record goes to loadtests/results/allocator/auto_requests.json. Writes a PNG of accuracy
against average eFLOPs for every policy to loadtests/results/allocator/, and ends with one JSON line.

    .venv/bin/python -m loadtests.allocator --quick       # a few minutes
    .venv/bin/python -m loadtests.allocator               # the full run (see --help for sizes)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from loadtests.fit_profiles import (
    SPEC,
    CostModel,
    Pool,
    chosen_correct,
    collect_pools,
    fit_best_of_n,
    fit_grid,
    load_tokenizer,
    post,
    problem_set,
    run_setting,
    setting_label,
    solve_body,
)
from loadtests.harness import ROOT, print_result, running_service
from service.runtime.cost import worst_case_eflops
from verifiers.answers import answers_equal

RESULTS = ROOT / "loadtests" / "results" / "allocator"
GRID = ROOT / "loadtests" / "profile_grid.json"
FAMILY = "mixed"


def fixed_policies(
    pools: list[Pool], replays: int, seed: int, judge: bool, cost: CostModel
) -> list[dict[str, Any]]:
    """Best-of-N at every N up to the pool size, by replaying random subsets of each report pool."""
    rng = random.Random(seed)
    size = min(len(pool.answers) for pool in pools)
    sizes = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= size]
    rules = ["majority", "weighted"] if judge else ["majority"]
    policies = []
    for rule in rules:
        for n in sizes:
            hits = eflops = 0.0
            for pool in pools:
                for _ in range(replays):
                    order = rng.sample(range(len(pool.answers)), n)
                    hits += chosen_correct(pool, order, rule) / replays
                    spent = cost.samples(pool.prompt_tokens, [pool.tokens[i] for i in order])
                    if rule == "weighted":
                        spent += n * pool.judge_eflops_each
                    eflops += spent / replays
            policies.append(
                {
                    "policy": f"best_of_n[{rule}] N={n}",
                    "rule": rule,
                    "n": n,
                    "accuracy": hits / len(pools),
                    "mean_eflops": eflops / len(pools),
                }
            )
    return policies


async def grid_policies(
    url: str, pools: list[Pool], grid: list[dict[str, Any]], concurrency: int
) -> list[dict[str, Any]]:
    """Every other strategy setting of the grid, run for real on the report problems (fixed policies)."""
    gate = asyncio.Semaphore(concurrency)
    policies = []
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        for setting in grid:
            outcomes = await run_setting(client, pools, setting, gate)
            policies.append(
                {
                    "policy": setting_label(setting),
                    "rule": "other",
                    "n": 0,
                    "accuracy": sum(ok for ok, _ in outcomes) / len(outcomes),
                    "mean_eflops": sum(eflops for _, eflops in outcomes) / len(outcomes),
                }
            )
            print(f"  {policies[-1]['policy']}: accuracy {policies[-1]['accuracy']:.3f}", flush=True)
    return policies


async def run_auto(
    url: str,
    pools: list[Pool],
    budget_n: int,
    concurrency: int,
    cost: CostModel,
    judge: bool,
    memory: str,
    remember: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`auto` for real on every report problem under an eFLOPs cap = worst case of one best-of-B call;
    `extra` adds auto params (and names the policy after them)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, pool: Pool) -> dict[str, Any]:
        problem = pool.problem
        cap = worst_case_eflops(
            cost.shape, cost.hardware, pool.prompt_tokens, budget_n, problem.max_tokens, cost.weights
        )
        body = solve_body(
            problem,
            {"eflops": cap},
            {"family": FAMILY, "memory": memory, "remember": remember, **(extra or {})},
            verifier="judge" if judge else None,
            return_candidates=True,
        )
        async with gate:
            result = await post(client, body)
        allocation = result["details"]["allocation"]
        return {
            "family": problem.family,
            "correct": answers_equal(result["answer"], problem.answer, SPEC),
            "abstained": result["abstained"],
            "eflops": result["usage"]["eflops"],
            "cap": cap,
            "predicted_accuracy": allocation["chosen"]["predicted_accuracy"],
            "chosen": allocation["chosen"]["strategy"] + str(allocation["chosen"]["params"]),
            "p": allocation["difficulty"]["p"],
            "skipped_probe": allocation["difficulty"]["probe_samples"] == 0,
            "probe_samples": allocation["difficulty"]["probe_samples"],
            "samples": len(result.get("candidates") or []),
            "predicted_eflops": allocation["cost"]["predicted_eflops"],
            "predicted_seconds": allocation["cost"]["predicted_seconds"],
            "spent_seconds": allocation["cost"]["spent_seconds"],
        }

    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        rows = list(await asyncio.gather(*(one(client, pool) for pool in pools)))
    n = len(rows)
    choices: dict[str, int] = {}
    for row in rows:
        choices[row["chosen"]] = choices.get(row["chosen"], 0) + 1
    by_family: dict[str, list[float]] = {}
    for row in rows:
        stats = by_family.setdefault(row["family"], [0.0, 0.0, 0.0])
        stats[0] += 1
        stats[1] += row["correct"]
        stats[2] += row["eflops"]
    return {
        "policy": f"auto{''.join(f' {k}={v}' for k, v in (extra or {}).items())} cap=BoN{budget_n}",
        "budget_n": budget_n,
        "accuracy": sum(r["correct"] for r in rows) / n,
        "predicted_accuracy": sum(r["predicted_accuracy"] for r in rows) / n,
        "mean_eflops": sum(r["eflops"] for r in rows) / n,
        "mean_cap": sum(r["cap"] for r in rows) / n,
        "max_spend_over_cap": max(r["eflops"] / r["cap"] for r in rows),
        "eflops_prediction_ratio": sum(r["eflops"] for r in rows)
        / max(sum(r["predicted_eflops"] for r in rows), 1.0),
        "seconds_prediction_ratio": sum(r["spent_seconds"] for r in rows)
        / max(sum(r["predicted_seconds"] for r in rows), 1e-9),
        "abstained": sum(r["abstained"] for r in rows),
        "skipped_probe": sum(r["skipped_probe"] for r in rows),
        "choices": dict(sorted(choices.items(), key=lambda item: -item[1])[:8]),
        "rows": rows,
        "by_family": {
            family: {"accuracy": round(s[1] / s[0], 3), "mean_eflops": s[2] / s[0]}
            for family, s in by_family.items()
        },
    }


def interpolate(curve: list[dict[str, Any]], eflops: float) -> float | None:
    """A fixed policy's accuracy at this average eFLOPs (linear in log eFLOPs between measured points)."""
    points: list[tuple[float, float]] = sorted((float(p["mean_eflops"]), float(p["accuracy"])) for p in curve)
    if not points or eflops < points[0][0] or eflops > points[-1][0]:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= eflops <= x1:
            t = 0.0 if x1 == x0 else (math.log(eflops) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    return points[-1][1]


def plot(
    fixed: list[dict[str, Any]], autos: list[dict[str, Any]], always: list[dict[str, Any]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for rule, marker in (("majority", "o"), ("weighted", "s")):
        curve = sorted((p for p in fixed if p["rule"] == rule), key=lambda p: p["mean_eflops"])
        if curve:
            axes.plot(
                [p["mean_eflops"] for p in curve],
                [p["accuracy"] for p in curve],
                marker=marker,
                label=f"best-of-N ({rule})",
            )
            for p in curve:
                axes.annotate(f"N={p['n']}", (p["mean_eflops"], p["accuracy"]), fontsize=7)
    others = [p for p in fixed if p["rule"] == "other"]
    if others:
        axes.scatter(
            [p["mean_eflops"] for p in others],
            [p["accuracy"] for p in others],
            marker="^",
            color="grey",
            label="other fixed strategies",
        )
        for p in others:
            axes.annotate(p["policy"], (p["mean_eflops"], p["accuracy"]), fontsize=6)
    for series, marker, label in ((autos, "*", "auto"), (always, "P", "auto, probe always")):
        if series:
            axes.plot(
                [a["mean_eflops"] for a in series],
                [a["accuracy"] for a in series],
                marker=marker,
                markersize=11,
                label=f"{label} (measured)",
            )
    axes.plot(
        [a["mean_eflops"] for a in autos],
        [a["predicted_accuracy"] for a in autos],
        linestyle="--",
        marker="x",
        label="auto (predicted)",
    )
    axes.set_xscale("log")
    axes.set_xlabel("average eFLOPs per problem")
    axes.set_ylabel("accuracy (report split)")
    axes.set_title("Budget allocator vs fixed strategies")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.allocator",
        description="auto vs fixed best-of-N (majority and judge-weighted) at equal average eFLOPs on a "
        "mixed-difficulty arithmetic + GSM8K set; fit on one split, report on the other.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--url", help="a running service (default: start one that reads the fitted profile)")
    parser.add_argument("--per-family", type=int, default=24, help="problems per arithmetic family per split")
    parser.add_argument("--gsm8k", type=int, default=12, help="GSM8K problems per split")
    parser.add_argument("--pool", type=int, default=16, help="samples per problem in the pools")
    parser.add_argument("--budgets", default="4,8,16", help="auto's caps: worst case of one best-of-B call")
    parser.add_argument(
        "--replays", type=int, default=30, help="random subsets per problem for fixed policies"
    )
    parser.add_argument(
        "--calibrate-questions", type=int, default=16, help="fit questions for judge calibration"
    )
    parser.add_argument("--no-judge", action="store_true", help="no verifier anywhere (majority only)")
    parser.add_argument(
        "--grid",
        type=str,
        default=str(GRID),
        help="other strategy settings (JSON list) to profile on the fit split and run on the report split; "
        "an empty string runs best-of-N only",
    )
    parser.add_argument(
        "--no-warm-memory",
        dest="warm_memory",
        action="store_false",
        help="do not run auto on the fit split first (its outcomes are the neighbour prior for report prompts)",
    )
    parser.add_argument(
        "--no-probe-always",
        dest="probe_always",
        action="store_false",
        help="do not also run auto with probe=always at every cap (the side-by-side of the probe decision)",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model-dir", type=Path, default=Path.home() / ".cache/ttc-service/models/SmolLM2-135M-Instruct"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small run to check the harness (a few minutes)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.per_family, args.gsm8k, args.pool, args.replays, args.calibrate_questions = 4, 2, 8, 10, 4
        args.budgets = "4,8"
    judge = not args.no_judge
    budgets = [int(b) for b in args.budgets.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    profile_dir = RESULTS / "profiles"
    profile_dir.mkdir(exist_ok=True)
    for stale in profile_dir.glob("*.json"):  # profiles of an earlier run must not leak into this one
        stale.unlink()
    grid = json.loads(Path(args.grid).read_text()) if args.grid else []
    if args.url is not None:
        print("note: with --url the service uses its own profiles, not the one fitted here")
    started = time.monotonic()
    env = {"TTC_ALLOCATOR_PROFILE_DIR": str(profile_dir)}
    with running_service(args.url, RESULTS, env) as url:
        cost = CostModel.from_service(httpx.get(f"{url}/v1/allocator", timeout=30).json())
        tokenizer = load_tokenizer(args.model_dir)
        fit = problem_set(args.per_family, args.gsm8k, args.seed, "fit")
        report = problem_set(args.per_family, args.gsm8k, args.seed, "report")
        print(f"problems: {len(fit)} fit + {len(report)} report; pool {args.pool}; budgets BoN{budgets}")

        t0 = time.monotonic()
        pools = asyncio.run(
            collect_pools(url, fit + report, args.pool, judge, args.concurrency, cost, tokenizer)
        )
        fit_pools, report_pools = pools[: len(fit)], pools[len(fit) :]
        pool_seconds = time.monotonic() - t0
        print(f"pools drawn in {pool_seconds:.0f} s")

        calibration = None
        if judge and args.calibrate_questions:
            examples = [
                {"question": p.question, "answer": p.answer}
                for p in fit[:: max(len(fit) // args.calibrate_questions, 1)]
            ][: args.calibrate_questions]
            response = httpx.post(
                f"{url}/v1/verifiers/judge/calibrate",
                json={
                    "family": FAMILY,
                    "examples": examples,
                    "samples_per_question": 4,
                    "sampling": {"max_tokens": 48},
                },
                timeout=3600,
            )
            response.raise_for_status()
            calibration = response.json()
            print(
                f"judge on '{FAMILY}': c = {calibration['completeness']:.3f}, s = {calibration['soundness']:.3f}"
            )

        profile = fit_best_of_n(fit_pools, args.replays, args.seed, judge)
        (profile_dir / "best_of_n.json").write_text(json.dumps(profile, indent=1) + "\n")
        if grid:
            t0 = time.monotonic()
            print(f"profiling {len(grid)} other strategy settings on the fit split ...", flush=True)
            others = asyncio.run(fit_grid(url, fit_pools, grid, args.concurrency, args.replays, args.seed))
            for name, data in others.items():
                (profile_dir / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
            print(f"profiles fitted in {time.monotonic() - t0:.0f} s", flush=True)

        fixed = fixed_policies(report_pools, args.replays, args.seed, judge, cost)
        if grid:
            print("running the same settings on the report split (fixed policies) ...", flush=True)
            fixed += asyncio.run(grid_policies(url, report_pools, grid, args.concurrency))
        # auto's memory of past prompts: filled by auto runs on the fit split only, never by report prompts.
        memory = f"bench-{uuid.uuid4().hex[:8]}"
        if args.warm_memory:
            t0 = time.monotonic()
            warm = asyncio.run(
                run_auto(
                    url, fit_pools, budgets[len(budgets) // 2], args.concurrency, cost, judge, memory, True
                )
            )
            print(
                f"auto on the fit split (fills the neighbour memory): {time.monotonic() - t0:.0f} s, accuracy {warm['accuracy']:.3f}"
            )
        autos = []
        for budget_n in budgets:
            t0 = time.monotonic()
            autos.append(
                asyncio.run(
                    run_auto(url, report_pools, budget_n, args.concurrency, cost, judge, memory, False)
                )
            )
            print(f"auto at cap BoN{budget_n}: {time.monotonic() - t0:.0f} s")
        # The same caps with the probe always drawn first (auto before it weighed the probe's value).
        always = []
        if args.probe_always:
            for budget_n in budgets:
                always.append(
                    asyncio.run(
                        run_auto(
                            url,
                            report_pools,
                            budget_n,
                            args.concurrency,
                            cost,
                            judge,
                            memory,
                            False,
                            {"probe": "always"},
                        )
                    )
                )

    majority = [p for p in fixed if p["rule"] == "majority"]
    weighted = [p for p in fixed if p["rule"] == "weighted"]
    best_fixed = max(fixed, key=lambda p: p["accuracy"])
    best_bon = max(majority + weighted, key=lambda p: p["accuracy"])
    print(f"\n{'policy':34} {'accuracy':>9} {'mean eFLOPs':>12}")
    for p in sorted(fixed, key=lambda p: (p["rule"], p["n"])):
        print(f"{p['policy']:34} {p['accuracy']:9.3f} {p['mean_eflops']:12.4g}")
    comparisons = []
    for a in autos:
        at_majority = interpolate(majority, a["mean_eflops"])
        at_weighted = interpolate(weighted, a["mean_eflops"]) if weighted else None
        hindsight = max(
            (p for p in fixed if p["mean_eflops"] <= a["mean_eflops"]),
            key=lambda p: p["accuracy"],
            default=None,
        )
        comparisons.append(
            {
                "budget": f"BoN{a['budget_n']}",
                "auto_accuracy": round(a["accuracy"], 4),
                "auto_predicted_accuracy": round(a["predicted_accuracy"], 4),
                "prediction_error": round(abs(a["accuracy"] - a["predicted_accuracy"]), 4),
                "auto_mean_eflops": a["mean_eflops"],
                "mean_cap": a["mean_cap"],
                "max_spend_over_cap": round(a["max_spend_over_cap"], 4),
                "bon_majority_at_same_eflops": None if at_majority is None else round(at_majority, 4),
                "bon_weighted_at_same_eflops": None if at_weighted is None else round(at_weighted, 4),
                "gain_vs_bon_majority": None
                if at_majority is None
                else round(a["accuracy"] - at_majority, 4),
                "gain_vs_bon_weighted": None
                if at_weighted is None
                else round(a["accuracy"] - at_weighted, 4),
                "best_fixed_in_hindsight": None if hindsight is None else hindsight["policy"],
                "gain_vs_best_fixed": None
                if hindsight is None
                else round(a["accuracy"] - hindsight["accuracy"], 4),
                "eflops_prediction_ratio": round(a["eflops_prediction_ratio"], 4),
                "seconds_prediction_ratio": round(a["seconds_prediction_ratio"], 4),
                "abstained": a["abstained"],
                "skipped_probe": a["skipped_probe"],
            }
        )
        print(
            f"{a['policy']:34} {a['accuracy']:9.3f} {a['mean_eflops']:12.4g}  predicted {a['predicted_accuracy']:.3f}"
            f"  max spend/cap {a['max_spend_over_cap']:.3f}  choices {a['choices']}"
        )
        print(f"{'':34} by family {a['by_family']}")
    probe_always = []
    for a, b in zip(autos, always, strict=False):
        at_majority = interpolate(majority, b["mean_eflops"])
        probe_always.append(
            {
                "budget": f"BoN{b['budget_n']}",
                "accuracy": round(b["accuracy"], 4),
                "mean_eflops": b["mean_eflops"],
                "gain_vs_bon_majority": None
                if at_majority is None
                else round(b["accuracy"] - at_majority, 4),
                "skipped_probe": b["skipped_probe"],
                "auto_minus_probe_always_accuracy": round(a["accuracy"] - b["accuracy"], 4),
                "auto_over_probe_always_eflops": round(a["mean_eflops"] / b["mean_eflops"], 4),
            }
        )
        print(
            f"{b['policy']:34} {b['accuracy']:9.3f} {b['mean_eflops']:12.4g}  predicted {b['predicted_accuracy']:.3f}"
            f"  choices {b['choices']}"
        )
    reach = [a for a in autos if a["accuracy"] >= best_bon["accuracy"]]
    reach_ratio = min(a["mean_eflops"] for a in reach) / best_bon["mean_eflops"] if reach else None
    gains = [c["gain_vs_bon_majority"] for c in comparisons if c["gain_vs_bon_majority"] is not None]
    errors = [c["prediction_error"] for c in comparisons]
    png = RESULTS / "accuracy_vs_eflops.png"
    plot(fixed, autos, always, png)
    summary = {
        "benchmark": "allocator",
        "problems": {"fit": len(fit_pools), "report": len(report_pools)},
        "pool": args.pool,
        "judge_calibration": None
        if calibration is None
        else {"completeness": calibration["completeness"], "soundness": calibration["soundness"]},
        "best_fixed": {
            "policy": best_fixed["policy"],
            "accuracy": round(best_fixed["accuracy"], 4),
            "mean_eflops": best_fixed["mean_eflops"],
        },
        "best_best_of_n": {
            "policy": best_bon["policy"],
            "accuracy": round(best_bon["accuracy"], 4),
            "mean_eflops": best_bon["mean_eflops"],
        },
        "comparisons": comparisons,
        "probe_always": probe_always,
        "mean_gain_vs_bon_majority": round(sum(gains) / len(gains), 4) if gains else None,
        "auto_eflops_to_reach_best_of_n": None if reach_ratio is None else round(reach_ratio, 4),
        "mean_prediction_error": round(sum(errors) / len(errors), 4),
        "spend_within_cap": all(a["max_spend_over_cap"] <= 1.0 + 1e-9 for a in autos),
        "targets": {
            "plus_5_points_at_equal_eflops": bool(gains) and max(gains) >= 0.05,
            "best_accuracy_with_quarter_eflops": reach_ratio is not None and reach_ratio <= 0.25,
            "prediction_within_5_points": sum(errors) / len(errors) <= 0.05,
        },
        "plot": str(png),
        "seconds": round(time.monotonic() - started, 1),
    }
    (RESULTS / "auto_requests.json").write_text(
        json.dumps({a["policy"]: a["rows"] for a in autos + always}, indent=1) + "\n"
    )
    print_result(summary)


if __name__ == "__main__":
    main()

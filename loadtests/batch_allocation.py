"""The batch allocator (POST /v1/solve/batch) against uniform best-of-N and per-prompt `auto`, at equal total eFLOPs.

Problems: the mixed set of the allocator benchmark (one-, two- and three-digit addition, one-digit
multiplication, GSM8K), a fit split (another seed, GSM8K train) and a report split (GSM8K test). In one run it

1. draws a pool of --pool samples per problem with their top-20 logprobs (one chat call with n = pool,
   /v1/solve's sampling), priced with the service's own eFLOPs accounting. Every policy runs as a batch
   does: a round's calls run together in the engine (at most the admission queue's samples in flight), so
   each call pays its share of the weight reads (strategies.allocation.costs.lockstep), uniform best-of-N's
   one call per problem included;
2. replays on the same pools, so every policy sees the same samples (between two live runs of the same
   best-of-N on this model, accuracy moved by 7 points):
   - uniform best-of-N at N = 1, 2, 4, ...: majority, and DeepConf's confidence vote (the top keep% of the N
     samples by lowest group confidence, weighted by it);
   - the batch allocator itself (strategies.allocation.batch.allocate, the service's own code) with the pools
     as its engine: a problem's samples come from its pool in a random order and are priced as the calls the
     allocator makes (each call pays its prompt and weight reads, no prefix-cache discount), under ONE cap
     equal to uniform best-of-N's total at N in --budgets; at most --pool samples per problem. Whole runs of
     other strategies cannot be replayed from sample pools: the replayed allocator has samples only, the live
     job (step 5) has its whole plan space;
3. on the fit split, fits the confidence vote's accuracy tables the allocator prices that vote with (by the
   probe's agreement, and by it within each quartile of the probe's most confident sample; --write-profile
   stores them), and replays a small grid of the allocator's knobs (probe size, vote) and names the best; the
   service's defaults are what the report split is measured with (a default the fit measured worse than an
   alternative is flagged);
4. on the report split, compares at each budget: batch vs uniform majority best-of-N (the issue's baseline),
   vs uniform best-of-N with the same confidence vote (what moving compute adds on its own), and the eFLOPs the
   batch needs to reach uniform majority best-of-N's best accuracy;
5. runs the same batch LIVE once through POST /v1/solve/batch (a job, one eFLOPs cap) at --live-budget, and
   per-prompt `auto` live at every budget (each problem with an equal share of the total as its own cap);
6. plots accuracy against total eFLOPs; ends with one JSON line.

    .venv/bin/python -m loadtests.batch_allocation --quick        # a few minutes
    .venv/bin/python -m loadtests.batch_allocation                # 200 report problems (see --help)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import statistics
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from loadtests.allocator import interpolate
from loadtests.deepconf import TracePool, collect
from loadtests.fit_profiles import SPEC, CostModel, Problem, post, problem_set, solve_body
from loadtests.harness import ROOT, print_result, running_service
from service.runtime.cost import worst_case_eflops
from service.runtime.settings import Settings
from strategies.allocation.batch import (
    CONFIDENCE_TABLE,
    Cost,
    Drawn,
    Fairness,
    Prompt,
    Remaining,
    Rules,
    allocate,
    level_table,
    unsampled,
)
from strategies.allocation.costs import SecondsModel, lockstep
from strategies.allocation.difficulty import signature
from strategies.allocation.profiles import Profile, load_profiles
from strategies.base import Candidate
from strategies.confidence import lowest_group_confidence
from strategies.deepconf import DeepConfParams
from strategies.selection import confident, select
from verifiers.answers import answers_equal

RESULTS = ROOT / "loadtests" / "results" / "batch_allocation"
PROFILES = ROOT / "strategies" / "allocation" / "profiles"
FAMILIES = ("add1", "mul", "add2", "add3", "gsm8k")
WINDOW = DeepConfParams().window
# samples a batch has in flight: the service's admission queue, all of it the benchmark's (its env below)
IN_FLIGHT = Settings().admission_max_sequences
MIN_CELL = 40  # observations (problem x order) a confidence-table cell needs to be kept


def mixed_problems(total: int, gsm8k_share: float, seed: int, split: str, worked: bool) -> list[Problem]:
    """`total` problems of a split: GSM8K's share, the rest spread evenly over the four arithmetic families."""
    gsm = round(total * gsm8k_share)
    per_family = max((total - gsm) // 4, 1)
    return problem_set(per_family, gsm, seed, split, worked)[:total]


@dataclass
class Scored:
    """One pool as the replays read it: answers, whether each is right, lengths, confidences."""

    pool: TracePool
    right: list[bool]
    confidence: list[float]

    @classmethod
    def of(cls, pool: TracePool) -> Scored:
        right = [pool.correct(answer) for answer in pool.answers]
        confidence = [lowest_group_confidence(c, WINDOW) for c in pool.confidences]
        return cls(pool, right, confidence)

    def candidates(self, order: list[int]) -> list[Candidate]:
        pool = self.pool
        return [Candidate("", pool.answers[i], pool.lengths[i], score=self.confidence[i]) for i in order]

    def answer(self, order: list[int], vote: str, keep_percent: float) -> bool:
        candidates = self.candidates(order)
        chosen = (
            confident(candidates, keep_percent) if vote == "confidence" else select(candidates, "majority")
        )
        return chosen is not None and answers_equal(chosen.answer, self.pool.problem.answer, SPEC)

    def eflops(self, order: list[int], cost: CostModel, weight_share: int = 1) -> float:
        """One call with these samples, as the service charges it (no prefix-cache discount), sharing the
        weight reads with `weight_share` calls of its round."""
        return cost.samples(self.pool.prompt_tokens, [self.pool.lengths[i] for i in order], weight_share)


def save_pools(path: Path, cost: dict[str, Any], pools: dict[str, list[TracePool]]) -> None:
    """The drawn pools (and the service's cost model) as JSON, so the replays can be run again offline."""

    def row(pool: TracePool) -> dict[str, Any]:
        return {
            "problem": dataclasses.asdict(pool.problem),
            "answers": pool.answers,
            "confidences": [[round(value, 4) for value in c] for c in pool.confidences],
            "prompt_tokens": pool.prompt_tokens,
            "cached_prompt_tokens": pool.cached_prompt_tokens,
            "eflops": pool.eflops,
            "eflops_no_weights": pool.eflops_no_weights,
        }

    path.write_text(json.dumps({"cost": cost, **{k: [row(p) for p in v] for k, v in pools.items()}}))


def problem_of(row: dict[str, Any]) -> Problem:
    """A saved problem (JSON has lists where the dataclass has tuples; older pools have no examples)."""
    examples = tuple((question, answer) for question, answer in row.get("examples", ()))
    return Problem(**{**row, "examples": examples})


def load_pools(path: Path) -> tuple[dict[str, Any], dict[str, list[TracePool]]]:
    data = json.loads(path.read_text())
    cost = data.pop("cost")
    pools = {
        split: [
            TracePool(
                problem_of(row["problem"]),
                row["answers"],
                row["confidences"],
                row["prompt_tokens"],
                row["cached_prompt_tokens"],
                row["eflops"],
                row["eflops_no_weights"],
            )
            for row in rows
        ]
        for split, rows in data.items()
    }
    return cost, pools


def uniform(
    scored: list[Scored],
    sizes: list[int],
    vote: str,
    keep_percent: float,
    replays: int,
    seed: int,
    cost: CostModel,
) -> list[dict[str, Any]]:
    """Uniform best-of-N at every N: random N-subsets of each pool, one call each."""
    rng = random.Random(seed)
    curve = []
    for n in sizes:
        hits = eflops = 0.0
        share = lockstep(len(scored), n, IN_FLIGHT)
        for item in scored:
            for _ in range(replays):
                order = rng.sample(range(len(item.right)), n)
                hits += item.answer(order, vote, keep_percent) / replays
                eflops += item.eflops(order, cost, share) / replays
        curve.append({"n": n, "accuracy": hits / len(scored), "total_eflops": eflops})
    return curve


class PoolEngine:
    """The pools as the allocator's engine and the batch's tracker: a problem's samples come from its pool in
    a random order, each call priced as the service prices it; `left` is the cap minus the spend."""

    def __init__(self, scored: list[Scored], cap: float, cost: CostModel, vote: str, seed: int) -> None:
        rng = random.Random(seed)
        self.by_key = {item.pool.problem.id: item for item in scored}
        self.order = {
            key: rng.sample(range(len(item.right)), len(item.right)) for key, item in self.by_key.items()
        }
        self.used = dict.fromkeys(self.by_key, 0)
        self.cap, self.cost, self.vote = cap, cost, vote
        self.spent = 0.0

    def left(self) -> Remaining:
        return Remaining(None, self.cap - self.spent)

    def worst(self, item: Scored, samples: int, share: int) -> float:
        """A call's worst case as the tracker reserves it (every sample at max_tokens, nothing cached)."""
        pool, cost = item.pool, self.cost
        return worst_case_eflops(
            cost.shape,
            cost.hardware,
            pool.prompt_tokens,
            samples,
            pool.problem.max_tokens,
            cost.weights,
            share,
        )

    async def draw(self, steps: list[tuple[str, int]]) -> dict[str, Drawn]:
        out = {}
        for key, n in steps:
            share = lockstep(len(steps), n, IN_FLIGHT)
            item = self.by_key[key]
            # the tracker's hard cap: a call whose worst case does not fit what is left gets fewer samples
            while n > 0 and self.spent + self.worst(item, n, share) > self.cap:
                n -= 1
            start = self.used[key]
            order = self.order[key][start : start + n]
            self.used[key] = start + len(order)
            candidates = item.candidates(order)
            if self.vote != "confidence":
                for candidate in candidates:
                    candidate.score = None
            eflops = item.eflops(order, self.cost, share) if order else 0.0
            self.spent += eflops
            out[key] = Drawn(candidates, eflops, sum(c.tokens for c in candidates))
        return out


@dataclass
class ConfidenceTables:
    """The confidence vote's measured accuracy by probe outcome: `bins`, thresholds on the probe's most
    confident sample, and `tables`, by table name (`confidence`: by agreement alone; `confidence@<level>`:
    agreement within that level) then agreement then total samples."""

    bins: list[float]
    tables: dict[str, dict[int, dict[int, float]]]


def fit_confidence_tables(
    scored: list[Scored], probe: int, orders: int, seed: int, keep_percent: float, levels: int = 4
) -> ConfidenceTables:
    """The confidence vote's accuracy by total samples (the probe's size up to the pool's) for each probe
    outcome, over random orders of the pools: by agreement (how many of the probe's samples agree), and by
    agreement within each of `levels` equal-count levels of the probe's most confident sample. A cell seen
    fewer than MIN_CELL times is left out (the allocator then prices it by agreement alone). These are the
    tables the allocator prices the confidence vote with (strategies.allocation.batch.vote_curves)."""
    rng = random.Random(seed)
    size = min(len(item.right) for item in scored)
    sizes = sorted({probe, *[n for n in (6, 8, 12, 16, 24, 32, 48, 64) if probe < n <= size], size})
    draws = [(item, rng.sample(range(len(item.right)), size)) for item in scored for _ in range(orders)]
    tops = [max(item.confidence[i] for i in order[:probe]) for item, order in draws]
    bins = [round(q, 4) for q in statistics.quantiles(tops, n=levels)] if levels > 1 else []
    hits: dict[str, dict[int, dict[int, float]]] = {}
    seen: dict[tuple[str, int], int] = {}
    for (item, order), top in zip(draws, tops, strict=True):
        agreement = signature(item.candidates(order[:probe]))
        right = {n: item.answer(order[:n], "confidence", keep_percent) for n in sizes}
        for name in (CONFIDENCE_TABLE, level_table(bins, top)):
            seen[name, agreement] = seen.get((name, agreement), 0) + 1
            row = hits.setdefault(name, {}).setdefault(agreement, dict.fromkeys(sizes, 0.0))
            for n in sizes:
                row[n] += right[n]
    tables = {
        name: {
            m: {n: row[n] / seen[name, m] for n in sizes}
            for m, row in sorted(rows.items())
            if name == CONFIDENCE_TABLE or seen[name, m] >= MIN_CELL
        }
        for name, rows in sorted(hits.items())
    }
    return ConfidenceTables(bins, tables)


def with_confidence_tables(profile: Profile, fitted: ConfidenceTables | None) -> Profile:
    """The best-of-N profile with these confidence-vote tables in its probe bins (None: none at all, so the
    allocator prices the confidence vote by the plurality closed form)."""
    tables = fitted.tables if fitted else {}
    bins = []
    for item in profile.bins:
        accuracy = {k: row for k, row in item.accuracy.items() if not k.startswith(CONFIDENCE_TABLE)}
        for name, table in tables.items():
            if item.signature in table:
                accuracy[name] = table[item.signature]
        bins.append(replace(item, accuracy=accuracy))
    return replace(
        profile,
        bins=tuple(bins),
        confidence_bins=tuple(fitted.bins) if fitted else (),
        source=f"{profile.source} + this run's confidence tables",
    )


def write_confidence_tables(path: Path, fitted: ConfidenceTables, fitted_on: str) -> None:
    """Merge the tables into the best-of-N profile file the service reads (its other tables stay)."""
    data = json.loads(path.read_text())
    for item in data["bins"]:
        accuracy = {
            k: row for k, row in item.get("accuracy", {}).items() if not k.startswith(CONFIDENCE_TABLE)
        }
        for name, table in fitted.tables.items():
            row = table.get(int(item["signature"]))
            if row is not None:
                accuracy[name] = {str(n): round(v, 4) for n, v in row.items()}
        item["accuracy"] = accuracy
    data["confidence_bins"] = fitted.bins
    data["confidence_fitted_on"] = fitted_on
    path.write_text(json.dumps(data, indent=1) + "\n")


def replay_batch(
    scored: list[Scored], cap: float, rules: Rules, cost: CostModel, seed: int, profile: Profile | None
) -> dict[str, Any]:
    """The service's allocator over the pools under one eFLOPs cap: accuracy, spend, samples by family."""
    engine = PoolEngine(scored, cap, cost, rules.vote, seed)
    pricing = Cost(cost.shape, cost.hardware, cost.weights, SecondsModel(), IN_FLIGHT)
    size = min(len(item.right) for item in scored)
    rules = replace(rules, max_samples=min(rules.max_samples, size))
    prompts = [
        Prompt(
            item.pool.problem.id,
            unsampled(pricing, item.pool.prompt_tokens, item.pool.problem.max_tokens, size),
        )
        for item in scored
    ]
    ledgers, pools = asyncio.run(
        allocate(
            prompts,
            engine.draw,
            engine.left,
            Remaining(None, cap),
            rules,
            Fairness(allow_abstain=True),
            profile,
        )
    )
    hits = 0
    samples: dict[str, list[int]] = {}
    for ledger in ledgers:
        item = engine.by_key[ledger.key]
        candidates = pools[ledger.key]
        if rules.vote == "confidence":
            chosen = confident(candidates, rules.keep_percent)
        else:
            chosen = select(candidates, "majority")
        hits += chosen is not None and answers_equal(chosen.answer, item.pool.problem.answer, SPEC)
        samples.setdefault(item.pool.problem.family, []).append(ledger.samples)
    return {
        "accuracy": hits / len(scored),
        "total_eflops": engine.spent,
        "spent_over_cap": engine.spent / cap,
        "mean_samples_by_family": {f: round(statistics.mean(v), 2) for f, v in samples.items()},
    }


def replay_mean(
    scored: list[Scored], cap: float, rules: Rules, cost: CostModel, seeds: int, profile: Profile | None
) -> dict[str, Any]:
    """replay_batch over `seeds` random pool orders, averaged."""
    runs = [replay_batch(scored, cap, rules, cost, seed, profile) for seed in range(seeds)]
    families = runs[0]["mean_samples_by_family"]
    return {
        "accuracy": statistics.mean(r["accuracy"] for r in runs),
        "total_eflops": statistics.mean(r["total_eflops"] for r in runs),
        "spent_over_cap": max(r["spent_over_cap"] for r in runs),
        "mean_samples_by_family": {
            f: round(statistics.mean(r["mean_samples_by_family"][f] for r in runs), 2) for f in families
        },
    }


# -- live ------------------------------------------------------------------------------------------------


def live_batch(url: str, problems: list[Problem], total_eflops: float) -> dict[str, Any]:
    """One POST /v1/solve/batch job over every problem under `total_eflops`, with the default allocation."""
    body = {
        "problems": [
            {
                "id": p.id,
                "messages": p.messages(),
                "sampling": {"max_tokens": p.max_tokens},
                "reference_answer": p.answer,
            }
            for p in problems
        ],
        "budget": {"eflops": total_eflops, "seconds": 3600},
        # at uniform BoN4's spend one worst-case sample everywhere may not fit: an unpaid problem abstains
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
            time.sleep(2.0)
    if job["status"] != "succeeded":
        raise RuntimeError(f"batch job {job_id} {job['status']}: {job.get('error')}")
    result: dict[str, Any] = job["result"]
    samples: dict[str, list[int]] = {}
    for row in result["problems"]:
        samples.setdefault(row["id"].split("-")[0], []).append(row["samples"])
    return {
        "accuracy": result["summary"]["accuracy"],
        "total_eflops": result["usage"]["eflops"],
        "spent_over_cap": result["usage"]["eflops"] / total_eflops,
        "statuses": result["summary"]["statuses"],
        "mean_samples_by_family": {f: round(statistics.mean(v), 2) for f, v in samples.items()},
        "seconds": round(time.monotonic() - started, 1),
    }


async def live_auto(url: str, problems: list[Problem], cap_each: float, concurrency: int) -> dict[str, Any]:
    """Per-prompt `auto`, every problem under an equal share of the total (no memory of past prompts)."""
    gate = asyncio.Semaphore(concurrency)
    memory = f"batch-bench-{uuid.uuid4().hex[:8]}"

    async def one(client: httpx.AsyncClient, problem: Problem) -> tuple[bool, float]:
        body = solve_body(
            problem, {"eflops": cap_each}, {"memory": memory, "remember": False, "neighbours": False}
        )
        async with gate:
            try:
                result = await post(client, body)
            except RuntimeError as exc:  # refused (a cap below one sample): counted as a wrong answer
                print(f"  auto refused {problem.id}: {exc}", flush=True)
                return False, 0.0
        return answers_equal(result["answer"], problem.answer, SPEC), float(result["usage"]["eflops"])

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        rows = await asyncio.gather(*(one(client, problem) for problem in problems))
    total = sum(eflops for _, eflops in rows)
    return {
        "accuracy": sum(ok for ok, _ in rows) / len(rows),
        "total_eflops": total,
        "spent_over_cap": total / (cap_each * len(rows)),
        "seconds": round(time.monotonic() - started, 1),
    }


def plot(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for (label, points), marker in zip(curves.items(), "os*P^", strict=False):
        if points:
            axes.plot(
                [p["total_eflops"] for p in points],
                [p["accuracy"] for p in points],
                marker=marker,
                label=label,
            )
    axes.set_xscale("log")
    axes.set_xlabel("total eFLOPs over the set")
    axes.set_ylabel("accuracy (report split)")
    axes.set_title("One budget for many prompts")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def knob_grid(defaults: Rules) -> list[Rules]:
    """The allocator's knobs the fit split compares (the defaults are among them): with the confidence vote,
    probe size x when a problem stops (min_gain) x how much of what is left one round hands out; the plain
    vote at the defaults' settings and at min_gain 0."""
    grid = [
        replace(defaults, vote="confidence", probe_samples=probe, min_gain=gain, round_share=share)
        for probe in (2, 4)
        for gain in (0.005, 0.002, 0.0005, 0.0)
        for share in (0.5, 1.0)
    ]
    grid += [
        replace(defaults, vote="majority", min_gain=0.002, round_share=0.5),
        replace(defaults, vote="majority", min_gain=0.0, round_share=1.0),
    ]
    return grid if defaults in grid else [defaults, *grid]


def label(rules: Rules) -> str:
    stop = "" if rules.consensus is None else f", consensus {rules.consensus}"
    return (
        f"probe {rules.probe_samples}, {rules.vote} vote, min_gain {rules.min_gain}, "
        f"round_share {rules.round_share}{stop}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.batch_allocation",
        description="Batch allocator vs uniform best-of-N (majority and confidence vote) vs per-prompt auto at "
        "equal total eFLOPs, fit on one split of the mixed arithmetic + GSM8K set and reported on another.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--url", help="a running service (default: start one)")
    parser.add_argument("--problems", type=int, default=200, help="problems of the report split")
    parser.add_argument("--fit-problems", type=int, default=100, help="problems of the fit split")
    parser.add_argument(
        "--gsm8k-share", type=float, default=0.1, help="share of GSM8K problems in each split"
    )
    parser.add_argument(
        "--pool",
        type=int,
        default=32,
        help="samples per problem: the most a replay gives one, and the largest N of the confidence-vote "
        "curves that --write-profile stores (twice the largest budget lets the batch move compute at BoN16)",
    )
    parser.add_argument(
        "--worked-sums",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="ask the arithmetic families after four worked sums (chat turns), which makes one-digit "
        "addition easy for the 135M model, two-digit middling and three-digit hopeless (asked bare, one-digit "
        "is middling and two-digit nearly hopeless)",
    )
    parser.add_argument("--budgets", default="4,8,16", help="total budgets: uniform best-of-N's at these N")
    parser.add_argument(
        "--replays", type=int, default=20, help="random subsets per problem for uniform best-of-N"
    )
    parser.add_argument("--orders", type=int, default=5, help="random pool orders per batch replay")
    parser.add_argument(
        "--live-budget", type=int, default=8, help="the N whose total the live batch job gets (0: none)"
    )
    parser.add_argument(
        "--auto",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run per-prompt auto live at every budget (the slowest part)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="pool and auto requests in flight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pools-from", type=Path, help="replay saved pools (a run's pools.json) instead of drawing new ones"
    )
    parser.add_argument(
        "--fit-also",
        type=Path,
        action="append",
        default=[],
        help="also fit the confidence-vote tables on this saved pools file's fit split (repeatable): the "
        "stored tables are fitted on the bare and the worked-sums pools together",
    )
    parser.add_argument(
        "--write-profile",
        action="store_true",
        help="write the fit split's confidence-vote tables into strategies/allocation/profiles/best_of_n.json",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="40 + 40 problems, pool 8, budgets 2,4,8, no auto (a few minutes)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.problems, args.fit_problems, args.pool, args.budgets = 40, 40, 8, "2,4,8"
        args.replays, args.orders, args.live_budget, args.auto = 10, 3, 4, False
    budgets = [int(b) for b in args.budgets.split(",")]
    if max(budgets) > args.pool:
        parser.error("--budgets may not exceed --pool (uniform best-of-N is replayed from the pool)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = mixed_problems(args.problems, args.gsm8k_share, args.seed, "report", args.worked_sums)
    fit = mixed_problems(args.fit_problems, args.gsm8k_share, args.seed, "fit", args.worked_sums)
    defaults = Rules()
    sizes = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= args.pool]
    env = {"TTC_ADMISSION_KEY_SHARE": "1.0", "TTC_ADMISSION_MAX_WAIT_SECONDS": "900"}
    live: dict[str, Any] | None = None
    autos: list[dict[str, Any]] = []
    pool_seconds = 0.0
    needs_service = args.pools_from is None or args.live_budget or args.auto
    with running_service(args.url, RESULTS, env) if needs_service else nullcontext(None) as url:
        if args.pools_from is not None:
            info, drawn = load_pools(args.pools_from)
            print(f"pools from {args.pools_from}", flush=True)
        else:
            assert url is not None
            info = httpx.get(f"{url}/v1/allocator", timeout=30).json()
            cost = CostModel.from_service(info)
            print(f"pools: {len(fit)} fit + {len(report)} report problems x {args.pool} samples", flush=True)
            t0 = time.monotonic()
            drawn = {
                "fit": asyncio.run(collect(url, fit, args.pool, args.concurrency, cost)),
                "report": asyncio.run(collect(url, report, args.pool, args.concurrency, cost)),
            }
            pool_seconds = time.monotonic() - t0
            samples_drawn = args.pool * (len(fit) + len(report))
            print(
                f"pools drawn in {pool_seconds:.0f} s ({samples_drawn / pool_seconds:.1f} samples/s)",
                flush=True,
            )
            save_pools(RESULTS / "pools.json", info, drawn)
        cost = CostModel.from_service(info)
        fit_pools = [Scored.of(p) for p in drawn["fit"]]
        report_pools = [Scored.of(p) for p in drawn["report"]]
        fit, report = [p.pool.problem for p in fit_pools], [p.pool.problem for p in report_pools]
        sizes = [n for n in sizes if n <= min(len(p.right) for p in fit_pools + report_pools)]
        # the confidence vote's measured accuracy by probe outcome, fitted on fit splits only: this run's and
        # --fit-also's (the same problems asked another way, say)
        table_pools = fit_pools + [Scored.of(p) for path in args.fit_also for p in load_pools(path)[1]["fit"]]
        fitted = fit_confidence_tables(
            table_pools, defaults.probe_samples, 4 * args.replays, args.seed, defaults.keep_percent
        )
        stored = load_profiles(PROFILES)["best_of_n"]
        profile = with_confidence_tables(stored, fitted)
        plain = with_confidence_tables(stored, None)
        print(
            "confidence vote accuracy by probe agreement (fit split); @level: the probe's most confident "
            f"sample above {fitted.bins[:1]} ... {fitted.bins[-1:]} (level = thresholds passed of {fitted.bins})",
            flush=True,
        )
        for name, table in fitted.tables.items():
            for agreement, by_samples in table.items():
                cells = " ".join(f"{n}:{value:.2f}" for n, value in by_samples.items())
                print(f"  {name:14} {agreement}/{defaults.probe_samples} agree: {cells}", flush=True)
        if args.write_profile:
            asked = sorted(
                {
                    "after worked sums" if item.pool.problem.examples else "bare"
                    for item in table_pools
                    if item.pool.problem.family != "gsm8k"
                }
            )
            fitted_on = (
                f"{len(table_pools)} problems of the batch benchmark's fit split (arithmetic asked "
                f"{' and '.join(asked)}), {4 * args.replays} orders"
            )
            write_confidence_tables(PROFILES / "best_of_n.json", fitted, fitted_on)

        # fit: the allocator's knobs on the fit split, at every budget
        fit_uniform = uniform(
            fit_pools, sizes, "majority", defaults.keep_percent, args.replays, args.seed, cost
        )
        fit_totals = {p["n"]: p["total_eflops"] for p in fit_uniform}
        grid = []
        for rules in knob_grid(defaults):
            rows = [replay_mean(fit_pools, fit_totals[n], rules, cost, args.orders, profile) for n in budgets]
            grid.append(
                {
                    "rules": rules,
                    "label": label(rules),
                    "accuracy": statistics.mean(r["accuracy"] for r in rows),
                }
            )
            print(
                f"  fit {label(rules):32} mean accuracy over the budgets {grid[-1]['accuracy']:.3f}",
                flush=True,
            )
        best_fit = max(grid, key=lambda row: row["accuracy"])
        default_fit = next(row for row in grid if row["rules"] == defaults)

        # report: uniform best-of-N (majority, confidence vote) and the batch with the defaults
        majority = uniform(
            report_pools, sizes, "majority", defaults.keep_percent, args.replays, args.seed, cost
        )
        confidence = uniform(
            report_pools, sizes, "confidence", defaults.keep_percent, args.replays, args.seed, cost
        )
        by_n = {p["n"]: p for p in majority}
        confident_by_n = {p["n"]: p for p in confidence}
        batches = []
        for n in budgets:
            cap = by_n[n]["total_eflops"]
            row = replay_mean(report_pools, cap, defaults, cost, args.orders, profile)
            majority_only = replay_mean(
                report_pools, cap, replace(defaults, vote="majority"), cost, args.orders, profile
            )
            closed_form = replay_mean(report_pools, cap, defaults, cost, args.orders, plain)
            batches.append(
                {
                    "n": n,
                    "cap": cap,
                    **row,
                    "majority_vote_accuracy": majority_only["accuracy"],
                    "closed_form_accuracy": closed_form["accuracy"],
                    "closed_form_samples_by_family": closed_form["mean_samples_by_family"],
                }
            )
            print(
                f"batch (replay) at BoN{n}: {row['accuracy']:.3f} (majority vote {majority_only['accuracy']:.3f}, "
                f"priced by the plurality closed form {closed_form['accuracy']:.3f}) "
                f"vs uniform majority {by_n[n]['accuracy']:.3f}, uniform confidence "
                f"{confident_by_n[n]['accuracy']:.3f}; spent {row['spent_over_cap']:.3f} of the cap; samples "
                f"{row['mean_samples_by_family']}",
                flush=True,
            )
        if args.live_budget and url is not None:
            cap = by_n[args.live_budget]["total_eflops"]
            live = {"n": args.live_budget, "cap": cap, **live_batch(url, report, cap)}
            print(f"batch (live job) at BoN{args.live_budget}: {live}", flush=True)
        if args.auto and url is not None:
            for n in budgets:
                cap = by_n[n]["total_eflops"]
                auto = asyncio.run(live_auto(url, report, cap / len(report), args.concurrency))
                autos.append({"n": n, "cap": cap, **auto})
                print(
                    f"auto (live) at BoN{n}: accuracy {auto['accuracy']:.3f}, {auto['seconds']} s", flush=True
                )

    # the target's "uniform best-of-N's best accuracy": at the budgets (a larger pool adds larger N)
    best = max((p for p in majority if p["n"] in budgets), key=lambda p: p["accuracy"])
    comparisons = []
    for row in batches:
        n = row["n"]
        at_same = interpolate(
            [{"mean_eflops": p["total_eflops"], "accuracy": p["accuracy"]} for p in majority],
            row["total_eflops"],
        )
        auto_row = next((a for a in autos if a["n"] == n), None)
        comparisons.append(
            {
                "budget": f"BoN{n}",
                "cap_eflops": row["cap"],
                "batch_accuracy": round(row["accuracy"], 4),
                "batch_spent_over_cap": round(row["spent_over_cap"], 4),
                "uniform_majority_accuracy": round(by_n[n]["accuracy"], 4),
                "gain_vs_uniform_majority": round(row["accuracy"] - by_n[n]["accuracy"], 4),
                "uniform_majority_at_batch_spend": None if at_same is None else round(at_same, 4),
                "uniform_confidence_accuracy": round(confident_by_n[n]["accuracy"], 4),
                "gain_vs_uniform_confidence": round(row["accuracy"] - confident_by_n[n]["accuracy"], 4),
                "batch_majority_vote_accuracy": round(row["majority_vote_accuracy"], 4),
                "gain_of_allocation_alone": round(row["majority_vote_accuracy"] - by_n[n]["accuracy"], 4),
                "batch_mean_samples_by_family": row["mean_samples_by_family"],
                "batch_closed_form_accuracy": round(row["closed_form_accuracy"], 4),
                "batch_closed_form_samples_by_family": row["closed_form_samples_by_family"],
                "auto_accuracy": None if auto_row is None else round(auto_row["accuracy"], 4),
                "auto_spent_over_cap": None if auto_row is None else round(auto_row["spent_over_cap"], 4),
            }
        )
    reach = [row for row in batches if row["accuracy"] >= best["accuracy"]]
    reach_ratio = min(row["total_eflops"] for row in reach) / best["total_eflops"] if reach else None
    gains = [c["gain_vs_uniform_majority"] for c in comparisons]
    png = RESULTS / "accuracy_vs_total_eflops.png"
    plot(
        {
            "uniform best-of-N (majority)": majority,
            "uniform best-of-N (confidence vote)": confidence,
            "batch allocator (replay)": batches,
            "batch allocator (live job)": [live] if live else [],
            "per-prompt auto (live)": autos,
        },
        png,
    )
    print(f"\n{'policy':40} {'accuracy':>9} {'total eFLOPs':>14}")
    for name, curve in (("uniform majority", majority), ("uniform confidence", confidence)):
        for p in curve:
            print(f"{name + ' N=' + str(p['n']):40} {p['accuracy']:9.3f} {p['total_eflops']:14.4g}")
    for row in batches:
        print(
            f"{'batch (replay) at BoN' + str(row['n']):40} {row['accuracy']:9.3f} {row['total_eflops']:14.4g}"
        )
    for auto in autos:
        print(
            f"{'auto (live) at BoN' + str(auto['n']):40} {auto['accuracy']:9.3f} {auto['total_eflops']:14.4g}"
        )
    summary = {
        "benchmark": "batch_allocation",
        "problems": len(report),
        "fit_problems": len(fit),
        "families": {f: sum(1 for p in report if p.family == f) for f in FAMILIES},
        "worked_sums": any(p.examples for p in report),
        "pool": min(len(p.right) for p in report_pools),
        "fit": {
            "grid": [{"rules": row["label"], "accuracy": round(row["accuracy"], 4)} for row in grid],
            "best": best_fit["label"],
            "defaults": label(defaults),
            # within half a fit problem of the best: closer than the replays can tell apart
            "defaults_behind_best": round(best_fit["accuracy"] - default_fit["accuracy"], 4),
            "defaults_are_best": default_fit["accuracy"] >= best_fit["accuracy"] - 0.5 / len(fit),
        },
        "best_uniform_majority": {
            "n": best["n"],
            "accuracy": round(best["accuracy"], 4),
            "total_eflops": best["total_eflops"],
        },
        "comparisons": comparisons,
        "live_batch": live,
        "max_gain_vs_uniform_majority": max(gains) if gains else None,
        "batch_eflops_to_reach_best_uniform": None if reach_ratio is None else round(reach_ratio, 4),
        "spend_within_cap": all(row["spent_over_cap"] <= 1 + 1e-9 for row in batches)
        and (live is None or live["spent_over_cap"] <= 1 + 1e-9),
        "targets": {
            "plus_5_points_at_equal_eflops": bool(gains) and max(gains) >= 0.05,
            "best_uniform_accuracy_with_quarter_eflops": reach_ratio is not None and reach_ratio <= 0.25,
        },
        "pool_seconds": round(pool_seconds, 1),
        "plot": str(png),
        "seconds": round(time.monotonic() - started, 1),
    }
    (RESULTS / "summary.json").write_text(
        json.dumps({"summary": summary, "batches": batches, "autos": autos}, indent=1)
    )
    print_result(summary)


if __name__ == "__main__":
    main()

"""Fit the `auto` allocator's measured strategy profiles (strategies/allocation/profiles/*.json).

For a set of fit problems (generated arithmetic of several difficulties plus GSM8K train), it draws a pool of
samples per problem through the service (best-of-N with the judge scoring every sample), then replays the
allocator's probe on random orders of each pool: for every probe outcome (how many of the k probe samples
agree) it measures the distribution of the per-sample success rate p, the spread of wrong answers, and the
accuracy of majority and judge-weighted votes at each total sample count. Other strategies are profiled by
running each parameter setting of `--grid` (a JSON list of {"strategy", "params", "uses_verifier"}) on the
same problems and recording accuracy per probe outcome and mean eFLOPs in units of one sample.

    .venv/bin/python -m loadtests.fit_profiles [--quick] [--url URL] [--out DIR] [--grid loadtests/profile_grid.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadtests.harness import ROOT, print_result, running_service
from service.runtime.cost import Hardware, ModelShape, generation_eflops
from strategies.allocation.profiles import PROFILE_DIR
from strategies.base import Candidate
from strategies.selection import Selection, select
from verifiers.answers import AnswerSpec, answers_equal

RESULTS = ROOT / "loadtests" / "results" / "fit_profiles"
GSM8K = Path("/work/shared/data/gsm8k")
PROBE = 4
P_BINS = 20
SPEC = AnswerSpec("number")
SUFFIX = " Answer with just the number."


def worked_sums(count: int = 4, seed: int = 99) -> tuple[tuple[str, str], ...]:
    """Two-digit sums asked and answered as "a + b = c": chat turns before an arithmetic question. After them
    SmolLM2-135M gets one-digit addition right 86% of the time, two-digit 27% (from 0 to 13 of 16 samples by
    problem) and three-digit 2%: easy, middling and hopeless kinds. Asked bare it gets them 25%, 8% and ~0%."""
    rng = random.Random(seed)
    sums = []
    for _ in range(count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        sums.append((f"What is {a} + {b}?", f"{a} + {b} = {a + b}"))
    return tuple(sums)


WORKED_SUMS = worked_sums()


@dataclass(frozen=True)
class Problem:
    id: str
    family: str
    question: str
    answer: str
    max_tokens: int
    # (question, answer) turns asked and answered before `question`
    examples: tuple[tuple[str, str], ...] = ()

    def messages(self) -> list[dict[str, str]]:
        """The conversation sent for this problem: its worked examples, then its question."""
        turns = []
        for question, answer in self.examples:
            turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return [*turns, {"role": "user", "content": self.question}]


@dataclass
class Pool:
    """The samples of one problem (answer, correct, judge score, tokens) and what the call cost."""

    problem: Problem
    answers: list[str | None]
    correct: list[bool]
    scores: list[float | None]
    tokens: list[int]
    prompt_tokens: int
    sample_eflops: float
    judge_eflops_each: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def p(self) -> float:
        return sum(self.correct) / max(len(self.correct), 1)


def arithmetic(rng: random.Random, family: str, index: int, worked: bool = False) -> Problem:
    """One problem of an arithmetic family; `worked`: asked after `WORKED_SUMS` (and without SUFFIX, which
    their "a + b = c" answers would contradict)."""
    if family == "add1":
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        text, value = f"What is {a} + {b}?", a + b
    elif family == "add2":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        text, value = f"What is {a} + {b}?", a + b
    elif family == "add3":
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        text, value = f"What is {a} + {b}?", a + b
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        text, value = f"What is {a} times {b}?", a * b
    if worked:
        return Problem(f"{family}-{index}", family, text, str(value), 24, WORKED_SUMS)
    return Problem(f"{family}-{index}", family, text + SUFFIX, str(value), 24)


def gsm8k(split: str, count: int, rng: random.Random) -> list[Problem]:
    rows = [json.loads(line) for line in (GSM8K / f"{split}.jsonl").read_text().splitlines() if line.strip()]
    chosen = rng.sample(rows, min(count, len(rows)))
    return [
        Problem(
            f"gsm8k-{split}-{i}",
            "gsm8k",
            row["question"] + " Give the final answer as a number after 'The answer is'.",
            row["answer"].split("####")[-1].strip().replace(",", ""),
            96,
        )
        for i, row in enumerate(chosen)
    ]


def problem_set(per_family: int, gsm: int, seed: int, split: str, worked: bool = False) -> list[Problem]:
    """A mixed-difficulty set; `split` (fit/report) changes the seed and GSM8K's file (train/test); `worked`:
    the arithmetic families are asked after worked sums."""
    rng = random.Random(f"{seed}-{split}")
    problems = [
        arithmetic(rng, family, i, worked)
        for family in ("add1", "mul", "add2", "add3")
        for i in range(per_family)
    ]
    problems += gsm8k("train" if split == "fit" else "test", gsm, rng)
    return problems


# -- the service -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostModel:
    """The service's own eFLOPs accounting (GET /v1/allocator), to price replayed subsets of a pool."""

    shape: ModelShape
    hardware: Hardware
    weights: bool

    @classmethod
    def from_service(cls, info: dict[str, Any]) -> CostModel:
        shape = ModelShape(**info["model_shape"])
        hw = info["hardware"]
        hardware = Hardware(hw["name"], hw["peak_flops"], hw["memory_bytes_per_second"])
        return cls(shape, hardware, bool(info["count_weight_loading"]))

    def samples(self, prompt_tokens: int, lengths: list[int], weight_share: int = 1) -> float:
        return generation_eflops(
            self.shape, self.hardware, prompt_tokens, 0, lengths, self.weights, weight_share
        )


def keep_other_tables(path: Path, profile: dict[str, Any]) -> None:
    """Carry over what this script does not fit (the batch benchmark's confidence-vote tables, their
    `confidence_bins` and when they were fitted) from the profile file it replaces, bin by bin."""
    if not path.exists():
        return
    old = json.loads(path.read_text())
    tables = {int(item["signature"]): item.get("accuracy", {}) for item in old.get("bins", [])}
    for item in profile.get("bins", []):
        accuracy = item.setdefault("accuracy", {})
        for key, table in tables.get(int(item["signature"]), {}).items():
            accuracy.setdefault(key, table)
    for key, value in old.items():
        if key.startswith("confidence"):
            profile.setdefault(key, value)


def solve_body(
    problem: Problem,
    budget: dict[str, float],
    params: dict[str, Any],
    strategy: str | None = None,
    verifier: str | None = None,
    return_candidates: bool = False,
) -> dict[str, Any]:
    """The `/v1/solve` body every benchmark here sends for one problem (`strategy` None: the service's default)."""
    body: dict[str, Any] = {
        "messages": problem.messages(),
        "budget": budget,
        "params": params,
        "sampling": {"max_tokens": problem.max_tokens},
    }
    if strategy is not None:
        body["strategy"] = strategy
    if verifier is not None:
        body["verifier"] = {"name": verifier}
    if return_candidates:
        body["return_candidates"] = True
    return body


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    for attempt in range(3):
        response = await client.post("/v1/solve", json=body)
        if response.status_code == 200:
            return dict(response.json())
        if attempt == 2 or response.status_code < 500:
            raise RuntimeError(f"/v1/solve {response.status_code}: {response.text[:300]}")
        await asyncio.sleep(2)
    raise AssertionError("unreachable")


def prompt_tokens_of(problem: Problem, tokenizer: Any) -> int:
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": problem.question}], tokenize=False, add_generation_prompt=True
    )
    return len(tokenizer.encode(rendered, add_special_tokens=False))


async def collect_pools(
    url: str,
    problems: list[Problem],
    pool: int,
    judge: bool,
    concurrency: int,
    cost: CostModel,
    tokenizer: Any,
) -> list[Pool]:
    """One best-of-N call per problem (judge-scored when asked); priced with the service's cost model."""
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(client: httpx.AsyncClient, problem: Problem) -> Pool:
        nonlocal done
        body = solve_body(
            problem,
            {"tokens": 1_000_000},
            {"n": pool, "selection": "weighted" if judge else "majority"},
            strategy="best_of_n",
            verifier="judge" if judge else None,
            return_candidates=True,
        )
        async with gate:
            result = await post(client, body)
        candidates = result["candidates"]
        tokens = [int(c["tokens"]) for c in candidates]
        prompt_tokens = prompt_tokens_of(problem, tokenizer)
        sample_cost = cost.samples(prompt_tokens, tokens)
        judge_each = max(result["usage"]["eflops"] - sample_cost, 0.0) / len(candidates) if judge else 0.0
        done += 1
        if done % 25 == 0:
            print(f"  pools: {done}/{len(problems)}", flush=True)
        return Pool(
            problem,
            [c["answer"] for c in candidates],
            [answers_equal(c["answer"], problem.answer, SPEC) for c in candidates],
            [c["score"] for c in candidates],
            tokens,
            prompt_tokens,
            sample_cost,
            judge_each,
        )

    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        return list(await asyncio.gather(*(one(client, problem) for problem in problems)))


# -- replaying pools -------------------------------------------------------------------------------------


def chosen_correct(pool: Pool, order: list[int], rule: str) -> bool:
    """What best-of-N with this selection rule answers on these samples (the service's own select())."""
    candidates = [
        Candidate("", pool.answers[i], pool.tokens[i], score=pool.scores[i] if rule != "majority" else None)
        for i in order
    ]
    selection: Selection = "majority" if rule == "majority" else "weighted"
    chosen = select(candidates, selection)
    return chosen is not None and answers_equal(chosen.answer, pool.problem.answer, SPEC)


def signature(pool: Pool, order: list[int]) -> int:
    counts = Counter(pool.answers[i] for i in order if pool.answers[i] is not None)
    return max(counts.values(), default=0)


def totals(pool_size: int) -> list[int]:
    values, n = [], PROBE
    while n <= pool_size:
        values.append(n)
        n *= 2
    return values


def fit_best_of_n(pools: list[Pool], replays: int, seed: int, judge: bool) -> dict[str, Any]:
    """The best-of-N profile: per probe outcome, p's distribution, wrong-answer spread, measured accuracy."""
    rng = random.Random(seed)
    rules = ["majority", "weighted"] if judge else ["majority"]
    size = min(len(pool.answers) for pool in pools)
    counts: Counter[int] = Counter()
    p_hist: dict[int, list[float]] = defaultdict(lambda: [0.0] * P_BINS)
    shares: dict[int, list[list[float]]] = defaultdict(list)
    wins: dict[tuple[int, str, int], list[int]] = defaultdict(lambda: [0, 0])
    for pool in pools:
        wrong = Counter(
            a for a, ok in zip(pool.answers, pool.correct, strict=True) if not ok and a is not None
        )
        wrong_total = sum(1 for ok in pool.correct if not ok)
        top = [count / wrong_total for _, count in wrong.most_common(2)] if wrong_total else []
        for _ in range(replays):
            order = rng.sample(range(len(pool.answers)), size)
            m = signature(pool, order[:PROBE])
            counts[m] += 1
            p_hist[m][min(int(pool.p * P_BINS), P_BINS - 1)] += 1
            shares[m].append(top + [0.0] * (2 - len(top)))
            for n in totals(size):
                for rule in rules:
                    cell = wins[(m, rule, n)]
                    cell[0] += chosen_correct(pool, order[:n], rule)
                    cell[1] += 1
    total = sum(counts.values())
    bins = []
    for m in sorted(counts):
        hist = p_hist[m]
        mass = sum(hist)
        mixture = [[round(h / mass, 5), round((i + 0.5) / P_BINS, 4)] for i, h in enumerate(hist) if h > 0]
        mean_shares = [round(sum(s[j] for s in shares[m]) / len(shares[m]), 4) for j in range(2)]
        accuracy = {
            rule: {str(n): round(wins[(m, rule, n)][0] / wins[(m, rule, n)][1], 4) for n in totals(size)}
            for rule in rules
        }
        bins.append(
            {
                "signature": m,
                "weight": round(counts[m] / total, 4),
                "p_mixture": mixture,
                "wrong_shares": mean_shares,
                "accuracy": accuracy,
            }
        )
    return {
        "strategy": "best_of_n",
        "probe_size": PROBE,
        "fitted_on": f"{len(pools)} problems x {size} samples, {replays} replays each",
        "problems": len(pools),
        "families": dict(Counter(pool.problem.family for pool in pools)),
        "bins": bins,
        "plans": [],
    }


def signature_weights(pool: Pool, replays: int, rng: random.Random) -> list[float]:
    """P(probe outcome m | problem), m = 0..PROBE, from random probes of its pool."""
    weights = [0.0] * (PROBE + 1)
    for _ in range(replays):
        weights[signature(pool, rng.sample(range(len(pool.answers)), PROBE))] += 1 / replays
    return weights


async def run_setting(
    client: httpx.AsyncClient, pools: list[Pool], setting: dict[str, Any], gate: asyncio.Semaphore
) -> list[tuple[bool, float]]:
    """One strategy setting of a grid on every problem: (correct, eFLOPs spent) per problem."""

    async def one(pool: Pool) -> tuple[bool, float]:
        body = solve_body(
            pool.problem,
            {"tokens": 1_000_000},
            setting.get("params", {}),
            strategy=setting["strategy"],
            verifier=setting.get("verifier", "judge") if setting.get("uses_verifier") else None,
        )
        async with gate:
            result = await post(client, body)
        return answers_equal(result["answer"], pool.problem.answer, SPEC), float(result["usage"]["eflops"])

    return list(await asyncio.gather(*(one(pool) for pool in pools)))


def setting_label(setting: dict[str, Any]) -> str:
    params = ",".join(f"{key}={value}" for key, value in sorted(setting.get("params", {}).items()))
    return f"{setting['strategy']}[{params}]"


async def fit_grid(
    url: str, pools: list[Pool], grid: list[dict[str, Any]], concurrency: int, replays: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Profiles of other strategies: run each setting on every fit problem; accuracy per probe outcome, cost
    in units of one sample of the same problem."""
    rng = random.Random(seed)
    weights = [signature_weights(pool, replays, rng) for pool in pools]
    profiles: dict[str, dict[str, Any]] = {}
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        for setting in grid:
            name = setting["strategy"]
            outcomes = await run_setting(client, pools, setting, gate)
            accuracy = []
            for m in range(PROBE + 1):
                mass = sum(w[m] for w in weights)
                hits = sum(w[m] * ok for w, (ok, _) in zip(weights, outcomes, strict=True))
                accuracy.append(round(hits / mass, 4) if mass > 0 else 0.0)
            units = [
                eflops / max(pool.sample_eflops / max(len(pool.tokens), 1), 1.0)
                for pool, (_, eflops) in zip(pools, outcomes, strict=True)
            ]
            mean_units = sum(units) / len(units)
            profile = profiles.setdefault(
                name,
                {
                    "strategy": name,
                    "probe_size": PROBE,
                    "fitted_on": f"{len(pools)} problems, one run of each setting, {replays} probe replays each",
                    "problems": len(pools),
                    "bins": [],
                    "plans": [],
                },
            )
            profile["plans"].append(
                {
                    "params": setting.get("params", {}),
                    "uses_verifier": bool(setting.get("uses_verifier")),
                    "cost_units": round(mean_units, 3),
                    "accuracy": accuracy,
                }
            )
            print(
                f"  {setting_label(setting)}: cost {mean_units:.1f} samples, accuracy by probe {accuracy}",
                flush=True,
            )
    return profiles


def load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.fit_profiles",
        description="Fit the auto allocator's strategy profiles from pools of real samples (fit split only).",
    )
    parser.add_argument("--url", help="a running service (default: start one)")
    parser.add_argument(
        "--per-family", type=int, default=30, help="problems per arithmetic family (4 families)"
    )
    parser.add_argument("--gsm8k", type=int, default=20, help="GSM8K train problems")
    parser.add_argument("--pool", type=int, default=16, help="samples per problem")
    parser.add_argument("--replays", type=int, default=40, help="random probe orders per problem")
    parser.add_argument("--no-judge", action="store_true", help="do not score samples with the judge")
    parser.add_argument(
        "--grid",
        type=str,
        default=str(ROOT / "loadtests" / "profile_grid.json"),
        help="JSON list of other strategy settings to profile (tree searches, revision); '' for best-of-N only",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=PROFILE_DIR, help="where the profile files go")
    parser.add_argument(
        "--model-dir", type=Path, default=Path.home() / ".cache/ttc-service/models/SmolLM2-135M-Instruct"
    )
    parser.add_argument("--quick", action="store_true", help="a small run (a few minutes)")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_family, args.gsm8k, args.pool, args.replays = 6, 4, 8, 10
    with running_service(args.url, RESULTS) as url:
        cost = CostModel.from_service(httpx.get(f"{url}/v1/allocator", timeout=30).json())
        tokenizer = load_tokenizer(args.model_dir)
        problems = problem_set(args.per_family, args.gsm8k, args.seed, "fit")
        started = time.monotonic()
        pools = asyncio.run(
            collect_pools(url, problems, args.pool, not args.no_judge, args.concurrency, cost, tokenizer)
        )
        profile = fit_best_of_n(pools, args.replays, args.seed, not args.no_judge)
        args.out.mkdir(parents=True, exist_ok=True)
        keep_other_tables(args.out / "best_of_n.json", profile)
        (args.out / "best_of_n.json").write_text(json.dumps(profile, indent=1) + "\n")
        written = ["best_of_n"]
        if args.grid:
            grid = json.loads(Path(args.grid).read_text())
            others = asyncio.run(fit_grid(url, pools, grid, args.concurrency, args.replays, args.seed))
            for name, data in others.items():
                (args.out / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
                written.append(name)
        pass_rate = sum(pool.p for pool in pools) / len(pools)
        print(f"fit {len(pools)} problems in {time.monotonic() - started:.0f} s; mean pass@1 {pass_rate:.3f}")
        print_result(
            {
                "profiles": written,
                "out": str(args.out),
                "problems": len(pools),
                "pass_at_1": round(pass_rate, 4),
            }
        )


if __name__ == "__main__":
    main()

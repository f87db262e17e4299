"""How imperfect is the calculator step checker? Completeness, soundness and AUROC on real samples.

Samples solutions from the real engine (through `/v1/solve`, best-of-N with the calculator verifier, so the
service's own scores come back with every candidate) for two-digit arithmetic and a GSM8K train sample,
labels each solution correct or wrong with the reference answer, and reports, at the verifier's threshold
(accept = score >= 0.5):
    completeness c = P(accept | correct),  soundness s = P(reject | wrong),  AUROC of the score.
The step aggregations last (the default), min and product are compared side by side on the same samples
(re-scored locally with the same code). The default's c and s are written to
`verifiers/calibration/calculator.json`, which the allocator reads. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from loadtests.harness import ROOT, print_result, running_service
from verifiers.answers import AnswerSpec, answers_equal
from verifiers.calculator import CalculatorOptions, CalculatorVerifier
from verifiers.steps import Aggregate

GSM8K_TRAIN = Path("/work/shared/data/gsm8k/train.jsonl")
CALIBRATION = ROOT / "verifiers" / "calibration" / "calculator.json"
RESULTS = ROOT / "loadtests" / "results" / "calculator_verifier"
THRESHOLD = 0.5
AGGREGATES: tuple[Aggregate, ...] = ("last", "min", "product")
ARITHMETIC_SUFFIX = " Write the calculation as an equation, then give the answer."
GSM8K_SUFFIX = (
    "\nSolve it step by step. Write every calculation as an equation like 3 * 4 = 12,"
    " and finish with: The answer is <number>."
)


@dataclass
class Question:
    family: str  # arithmetic or gsm8k
    text: str
    reference: str
    max_tokens: int


@dataclass
class Solution:
    family: str
    text: str
    correct: bool
    service_score: float


# -- data -----------------------------------------------------------------------------------------------
def arithmetic_questions(count: int, rng: random.Random, max_tokens: int, operations: str) -> list[Question]:
    questions = []
    for index in range(count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        op = operations[index % len(operations)]
        value = a + b if op == "+" else a - b if op == "-" else a * b
        questions.append(
            Question("arithmetic", f"What is {a} {op} {b}?{ARITHMETIC_SUFFIX}", str(value), max_tokens)
        )
    return questions


def gsm8k_questions(count: int, rng: random.Random, max_tokens: int) -> list[Question]:
    rows = [json.loads(line) for line in GSM8K_TRAIN.read_text().splitlines() if line.strip()]
    picked = rng.sample(rows, count) if count else []
    return [
        Question(
            "gsm8k",
            row["question"] + GSM8K_SUFFIX,
            row["answer"].split("####")[-1].strip().replace(",", ""),
            max_tokens,
        )
        for row in picked
    ]


# -- service --------------------------------------------------------------------------------------------
async def sample(
    http: httpx.AsyncClient,
    question: Question,
    samples: int,
    seed: int,
    temperature: float,
    gate: asyncio.Semaphore,
) -> list[Solution]:
    body = {
        "prompt": question.text,
        "strategy": "best_of_n",
        "verifier": {"name": "calculator"},
        "params": {"n": samples, "selection": "max"},
        "sampling": {"max_tokens": question.max_tokens, "temperature": temperature, "seed": seed},
        "return_candidates": True,
    }
    async with gate:
        response = await http.post("/v1/solve", json=body)
    response.raise_for_status()
    spec = AnswerSpec()
    return [
        Solution(
            question.family,
            candidate["text"],
            answers_equal(candidate["answer"], question.reference, spec),
            float(candidate["score"]),
        )
        for candidate in response.json()["candidates"]
    ]


# -- figures --------------------------------------------------------------------------------------------
def auroc(scores: list[float], labels: list[bool]) -> float | None:
    """P(score of a random correct solution > that of a random wrong one), ties counted half."""
    right = [s for s, label in zip(scores, labels, strict=True) if label]
    wrong = [s for s, label in zip(scores, labels, strict=True) if not label]
    if not right or not wrong:
        return None
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def figures(scores: list[float], labels: list[bool]) -> dict[str, Any]:
    accepted = [score >= THRESHOLD for score in scores]
    correct = sum(labels)
    wrong = len(labels) - correct
    accept_right = sum(a and label for a, label in zip(accepted, labels, strict=True))
    reject_wrong = sum(not a and not label for a, label in zip(accepted, labels, strict=True))
    return {
        "solutions": len(labels),
        "correct": correct,
        "completeness": accept_right / correct if correct else None,
        "soundness": reject_wrong / wrong if wrong else None,
        "auroc": auroc(scores, labels),
    }


def fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.3f}"


# -- main -----------------------------------------------------------------------------------------------
async def collect(
    url: str, questions: list[Question], samples: int, seed: int, temperature: float, parallel: int
) -> list[Solution]:
    gate = asyncio.Semaphore(parallel)
    async with httpx.AsyncClient(base_url=url, timeout=900.0) as http:
        batches = await asyncio.gather(
            *(
                sample(http, question, samples, seed + index, temperature, gate)
                for index, question in enumerate(questions)
            )
        )
    return [solution for batch in batches for solution in batch]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="An already running service (default: start one on a free port).")
    parser.add_argument("--arithmetic", type=int, default=40, help="Two-digit arithmetic questions (40).")
    parser.add_argument("--gsm8k", type=int, default=40, help="GSM8K train questions (40).")
    parser.add_argument("--samples", type=int, default=8, help="Solutions sampled per question (8).")
    parser.add_argument("--arithmetic-tokens", type=int, default=64, help="max_tokens for arithmetic (64).")
    parser.add_argument("--gsm8k-tokens", type=int, default=192, help="max_tokens for GSM8K (192).")
    parser.add_argument(
        "--operations",
        default="+-",
        help="Arithmetic operations, cycled ('+-'; '*' is near hopeless for this model).",
    )
    parser.add_argument("--temperature", type=float, default=0.8, help="Sampling temperature (0.8).")
    parser.add_argument("--parallel", type=int, default=4, help="Questions in flight at once (4).")
    parser.add_argument("--seed", type=int, default=0, help="Seed for question choice and sampling (0).")
    parser.add_argument("--quick", action="store_true", help="6 + 6 questions x 5 samples (60 solutions).")
    parser.add_argument(
        "--no-save", action="store_true", help=f"Do not write {CALIBRATION.relative_to(ROOT)}."
    )
    args = parser.parse_args()
    if args.quick:
        args.arithmetic, args.gsm8k, args.samples = 6, 6, 5

    rng = random.Random(args.seed)
    questions = arithmetic_questions(
        args.arithmetic, rng, args.arithmetic_tokens, args.operations
    ) + gsm8k_questions(args.gsm8k, rng, args.gsm8k_tokens)
    started = time.monotonic()
    with running_service(args.url, RESULTS) as url:
        print(f"sampling {len(questions)} questions x {args.samples} from {url} ...", flush=True)
        solutions = asyncio.run(
            collect(url, questions, args.samples, args.seed, args.temperature, args.parallel)
        )
    seconds = time.monotonic() - started

    labels = [solution.correct for solution in solutions]
    local = {
        how: [CalculatorVerifier(CalculatorOptions(aggregate=how)).candidate_score(s.text) for s in solutions]
        for how in AGGREGATES
    }
    mismatches = sum(abs(a - s.service_score) > 1e-9 for a, s in zip(local["last"], solutions, strict=True))
    with_equation = sum(
        bool(CalculatorVerifier(CalculatorOptions(neutral_score=0.5)).candidate_score(s.text) != 0.5)
        for s in solutions
    )
    results: dict[str, Any] = {"by_aggregate": {}, "by_family": {}}
    print(f"\n{len(solutions)} solutions, {sum(labels)} correct, in {seconds:.0f} s")
    print(f"service scores equal to local 'last' scores: {len(solutions) - mismatches}/{len(solutions)}")
    print(f"\n{'aggregate':10} {'family':11} {'n':>4} {'right':>5}   c      s      AUROC")
    for how in AGGREGATES:
        for family in ("all", "arithmetic", "gsm8k"):
            keep = [i for i, s in enumerate(solutions) if family in ("all", s.family)]
            row = figures([local[how][i] for i in keep], [labels[i] for i in keep])
            if family == "all":
                results["by_aggregate"][how] = row
            elif how == "last":
                results["by_family"][family] = row
            print(
                f"{how:10} {family:11} {row['solutions']:4d} {row['correct']:5d}   "
                f"{fmt(row['completeness'])}  {fmt(row['soundness'])}  {fmt(row['auroc'])}"
            )
    default = results["by_aggregate"]["last"]
    calibration = {
        "verifier": "calculator",
        "options": CalculatorOptions().model_dump(),
        "threshold": THRESHOLD,
        "completeness": default["completeness"],
        "soundness": default["soundness"],
        "auroc": default["auroc"],
        "solutions": default["solutions"],
        "correct": default["correct"],
        "by_aggregate": results["by_aggregate"],
        "by_family": results["by_family"],
        "data": {
            "arithmetic": args.arithmetic,
            "operations": args.operations,
            "gsm8k_train": args.gsm8k,
            "samples": args.samples,
            "temperature": args.temperature,
        },
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if not args.no_save:
        CALIBRATION.parent.mkdir(parents=True, exist_ok=True)
        CALIBRATION.write_text(json.dumps(calibration, indent=2) + "\n")
        print(f"\nwrote {CALIBRATION.relative_to(ROOT)}")
    ratio = (
        default["completeness"] / (1 - default["soundness"])
        if default["completeness"] is not None and default["soundness"] not in (None, 1.0)
        else None
    )
    print(f"accept rate correct/wrong (c / (1 - s)): {fmt(ratio)}")
    print(f"solutions with at least one checked equation: {with_equation}/{len(solutions)}")
    summary = {
        "benchmark": "calculator_verifier",
        "solutions": len(solutions),
        "correct": sum(labels),
        "completeness": default["completeness"],
        "soundness": default["soundness"],
        "auroc": default["auroc"],
        "accept_ratio": ratio,
        "with_equation": with_equation,
        "by_aggregate": results["by_aggregate"],
        "by_family": results["by_family"],
        "service_score_mismatches": mismatches,
        "seconds": round(seconds, 1),
    }
    print_result(summary)


if __name__ == "__main__":
    main()

"""Scaling curve of best-of-N: accuracy versus completion tokens, N = 1..32, on two-digit addition and GSM8K.

Efficient design: each question is sent once to `/v1/solve` (best_of_n, n = the largest N, the `judge`
verifier, return_candidates), and the curve for every smaller N is computed from those candidates:
  - `prefix`: the first N candidates (exactly what a request with n = N and the same seed would have drawn:
    vLLM seeds sample i with seed + i);
  - `bootstrap`: the average over random N-subsets of the candidates (over every subset when there are
    few, e.g. N = 1; smoother; pass@N uses the exact unbiased estimator 1 - C(n-c, N) / C(n, N) instead).
Selection reuses the service's own `strategies.selection.select`: majority vote and verifier-weighted vote.
pass@N (any of the N candidates correct) is the ceiling either selection can reach.
The x axis is the mean completion tokens of the N samples per question (the judge's own one-token answers
and prompt reads are not on it; the service's full usage is in the JSON).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loadtests.harness import ROOT, print_result, running_service
from strategies.base import Candidate
from strategies.selection import Selection, select
from verifiers.answers import AnswerSpec, answers_equal

GSM8K_TEST = Path("/work/shared/data/gsm8k/test.jsonl")
RESULTS = ROOT / "loadtests" / "results" / "scaling"
NUMBER = AnswerSpec("number")
ADDITION_PROMPT = "What is {a} + {b}? Answer with just the number."
GSM8K_PROMPT = "{question}\nSolve it step by step, then write the final answer after '####'."


@dataclass
class Question:
    dataset: str
    prompt: str
    gold: str
    max_tokens: int


@dataclass
class Drawn:
    """The candidates of one question, in the order the engine returned them (sample index)."""

    question: Question
    candidates: list[Candidate]
    usage: dict[str, Any]
    seconds: float

    def correct(self) -> list[bool]:
        return [answers_equal(c.answer, self.question.gold, NUMBER) for c in self.candidates]


def addition_questions(count: int, seed: int, max_tokens: int) -> list[Question]:
    rng = random.Random(seed)
    questions = []
    for _ in range(count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        questions.append(Question("addition", ADDITION_PROMPT.format(a=a, b=b), str(a + b), max_tokens))
    return questions


def gsm8k_questions(count: int, seed: int, max_tokens: int) -> list[Question]:
    lines = GSM8K_TEST.read_text().splitlines()
    chosen = random.Random(seed).sample(lines, min(count, len(lines)))
    questions = []
    for line in chosen:
        row = json.loads(line)
        gold = row["answer"].split("####")[-1].strip().replace(",", "")
        questions.append(Question("gsm8k", GSM8K_PROMPT.format(question=row["question"]), gold, max_tokens))
    return questions


def draw(
    client: httpx.Client, url: str, question: Question, samples: int, args: argparse.Namespace, seed: int
) -> Drawn:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": question.prompt}],
        "strategy": "best_of_n",
        "params": {"n": samples},
        "budget": {"tokens": samples * question.max_tokens + 4 * samples},
        "sampling": {"max_tokens": question.max_tokens, "temperature": args.temperature, "seed": seed},
        "answer": {"type": "number"},
        "return_candidates": True,
    }
    if not args.no_judge:
        body["verifier"] = {"name": "judge"}
    started = time.perf_counter()
    response = client.post(f"{url}/v1/solve", json=body)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    data = response.json()
    candidates = [
        Candidate(c["text"], c["answer"], c["tokens"], c["finish_reason"], c["score"])
        for c in data["candidates"]
    ]
    return Drawn(question, candidates, data["usage"], seconds)


def chosen_correct(drawn: Drawn, indices: list[int], selection: Selection) -> bool:
    subset = [
        Candidate(c.text, c.answer, c.tokens, c.finish_reason, c.score)
        for c in (drawn.candidates[i] for i in indices)
    ]
    chosen = select(subset, selection)
    return chosen is not None and answers_equal(chosen.answer, drawn.question.gold, NUMBER)


def pass_at(total: int, correct: int, k: int) -> float:
    """Unbiased pass@k from `total` samples of which `correct` are right (Chen et al., 2021)."""
    if total - correct < k:
        return 1.0
    return 1.0 - math.comb(total - correct, k) / math.comb(total, k)


def curve(
    draws: list[Drawn], ns: list[int], bootstrap: int, seed: int, with_scores: bool
) -> list[dict[str, Any]]:
    """Per N: accuracy of majority / weighted / pass@N, prefix and bootstrap, and mean completion tokens."""
    rng = random.Random(seed)
    rows = []
    for n in ns:
        prefix: dict[str, list[float]] = {"majority": [], "weighted": [], "pass": []}
        boot: dict[str, list[float]] = {"majority": [], "weighted": [], "pass": []}
        prefix_tokens, boot_tokens = [], []
        for drawn in draws:
            total = len(drawn.candidates)
            if total < n:
                continue
            correct = drawn.correct()
            first = list(range(n))
            prefix["majority"].append(chosen_correct(drawn, first, "majority"))
            if with_scores:
                prefix["weighted"].append(chosen_correct(drawn, first, "weighted"))
            prefix["pass"].append(any(correct[:n]))
            prefix_tokens.append(sum(c.tokens for c in drawn.candidates[:n]))
            if math.comb(total, n) <= bootstrap:  # few enough to average over every subset exactly
                subsets = [list(chosen) for chosen in itertools.combinations(range(total), n)]
            else:
                subsets = [rng.sample(range(total), n) for _ in range(bootstrap)]
            boot["majority"].append(statistics.fmean(chosen_correct(drawn, s, "majority") for s in subsets))
            if with_scores:
                boot["weighted"].append(
                    statistics.fmean(chosen_correct(drawn, s, "weighted") for s in subsets)
                )
            boot["pass"].append(pass_at(total, sum(correct), n))
            boot_tokens.append(n * statistics.fmean(c.tokens for c in drawn.candidates))
        if not prefix_tokens:
            continue

        def mean(values: list[float]) -> float | None:
            return round(statistics.fmean(values), 4) if values else None

        rows.append(
            {
                "n": n,
                "questions": len(prefix_tokens),
                "tokens_prefix": round(statistics.fmean(prefix_tokens), 1),
                "tokens_bootstrap": round(statistics.fmean(boot_tokens), 1),
                "prefix": {key: mean(values) for key, values in prefix.items()},
                "bootstrap": {key: mean(values) for key, values in boot.items()},
            }
        )
    return rows


def judge_summary(draws: list[Drawn]) -> dict[str, float | None]:
    """Mean judge score of correct and of wrong candidates: a judge that cannot tell them apart turns the
    weighted vote into the majority vote."""
    right: list[float] = []
    wrong: list[float] = []
    for drawn in draws:
        for candidate, correct in zip(drawn.candidates, drawn.correct(), strict=True):
            if candidate.score is not None:
                (right if correct else wrong).append(candidate.score)

    def mean(values: list[float]) -> float | None:
        return round(statistics.fmean(values), 4) if values else None

    spread = round(statistics.pstdev(right + wrong), 4) if right + wrong else None
    return {"mean_correct": mean(right), "mean_wrong": mean(wrong), "std_all": spread}


def plot(curves: dict[str, list[dict[str, Any]]], path: Path, samples: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.5), squeeze=False)
    for axis, (dataset, rows) in zip(axes[0], curves.items(), strict=True):
        tokens = [row["tokens_bootstrap"] for row in rows]
        for key, label, style in (
            ("pass", "pass@N (ceiling)", "k--"),
            ("weighted", "best-of-N, judge-weighted vote", "o-"),
            ("majority", "best-of-N, majority vote", "s-"),
        ):
            values = [row["bootstrap"][key] for row in rows]
            if any(value is None for value in values):
                continue
            axis.plot(tokens, [100 * v for v in values], style, label=label)
            for x, y, row in zip(tokens, values, rows, strict=True):
                if key == "pass":
                    axis.annotate(
                        f"N={row['n']}", (x, 100 * y), textcoords="offset points", xytext=(0, 5), fontsize=7
                    )
        axis.set_xscale("log", base=2)
        axis.set_xlabel("completion tokens per question (mean, samples only)")
        axis.set_ylabel("accuracy (%)")
        axis.set_title(f"{dataset} ({rows[0]['questions'] if rows else 0} questions, {samples} samples each)")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("best-of-N: averages over subsets of one draw per question", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.scaling",
        description=(
            "Accuracy of best-of-N (majority and judge-weighted vote, plus pass@N) versus completion tokens on "
            "two-digit addition and a GSM8K test sample. Draws --samples candidates per question once through "
            "/v1/solve and computes every smaller N by subsampling. Writes a PNG and ends with one JSON line."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run to check the harness")
    parser.add_argument("--addition", type=int, default=64, help="two-digit addition questions")
    parser.add_argument("--gsm8k", type=int, default=12, help="GSM8K test questions (random sample)")
    parser.add_argument("--samples", type=int, default=32, help="candidates drawn per question (largest N)")
    parser.add_argument("--ns", default="1,2,4,8,16,32", help="N values of the curve (each <= --samples)")
    parser.add_argument("--addition-max-tokens", type=int, default=24, help="max_tokens per addition sample")
    parser.add_argument("--gsm8k-max-tokens", type=int, default=256, help="max_tokens per GSM8K sample")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    parser.add_argument("--bootstrap", type=int, default=200, help="random subsets per question and N")
    parser.add_argument("--seed", type=int, default=0, help="seed for questions, sampling and subsets")
    parser.add_argument("--no-judge", action="store_true", help="skip the judge verifier (majority only)")
    parser.add_argument("--port", type=int, default=8193, help="port for the service we start")
    parser.add_argument("--kv-cache-gib", type=int, default=2, help="KV cache of the service's engine")
    parser.add_argument("--url", default=None, help="use this running service instead of starting one")
    args = parser.parse_args(argv)
    if args.quick:
        args.addition, args.gsm8k, args.samples, args.ns = 6, 2, 8, "1,2,4,8"
        args.gsm8k_max_tokens, args.bootstrap, args.kv_cache_gib = 96, 50, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ns = [int(part) for part in args.ns.split(",") if int(part) <= args.samples]
    questions = addition_questions(args.addition, args.seed, args.addition_max_tokens) + gsm8k_questions(
        args.gsm8k, args.seed, args.gsm8k_max_tokens
    )
    env = {"TTC_KV_CACHE_GIB": str(args.kv_cache_gib)}
    draws: dict[str, list[Drawn]] = {"addition": [], "gsm8k": []}
    started = time.perf_counter()
    with (
        running_service(args.url, RESULTS, env, port=args.port) as url,
        httpx.Client(timeout=httpx.Timeout(1800.0)) as client,
    ):
        for index, question in enumerate(questions):
            drawn = draw(client, url, question, args.samples, args, seed=args.seed * 100_000 + index * 1000)
            draws[question.dataset].append(drawn)
            correct = sum(drawn.correct())
            print(
                f"[{index + 1}/{len(questions)}] {question.dataset}: {correct}/{len(drawn.candidates)} correct, "
                f"{sum(c.tokens for c in drawn.candidates)} tokens, {drawn.seconds:.1f} s",
                flush=True,
            )
    elapsed = time.perf_counter() - started

    curves = {
        dataset: curve(found, ns, args.bootstrap, args.seed, not args.no_judge)
        for dataset, found in draws.items()
        if found
    }
    print(
        f"\n{args.samples} samples drawn once per question; curve per N from the first N (prefix) and from "
        f"{args.bootstrap} random N-subsets (bootstrap; pass@N by the unbiased estimator)."
    )
    for dataset, rows in curves.items():
        print(f"\n{dataset}:")
        print(f"{'N':>4} {'tokens':>8} {'majority':>9} {'weighted':>9} {'pass@N':>7}   (bootstrap | prefix)")
        for row in rows:
            boot, prefix = row["bootstrap"], row["prefix"]

            def pct(value: float | None) -> str:
                return "-" if value is None else f"{100 * value:.1f}%"

            print(
                f"{row['n']:>4} {row['tokens_bootstrap']:>8.1f} {pct(boot['majority']):>9} {pct(boot['weighted']):>9} "
                f"{pct(boot['pass']):>7}   | {pct(prefix['majority'])} {pct(prefix['weighted'])} {pct(prefix['pass'])}"
            )
    judge = {dataset: judge_summary(found) for dataset, found in draws.items() if found and not args.no_judge}
    for dataset, summary in judge.items():
        print(f"judge scores on {dataset}: {summary}")
    with (RESULTS / "candidates.jsonl").open("w") as out:
        for dataset, found in draws.items():
            for drawn in found:
                row = {
                    "dataset": dataset,
                    "prompt": drawn.question.prompt,
                    "gold": drawn.question.gold,
                    "candidates": [
                        {
                            "answer": c.answer,
                            "score": c.score,
                            "tokens": c.tokens,
                            "finish_reason": c.finish_reason,
                        }
                        for c in drawn.candidates
                    ],
                }
                out.write(json.dumps(row) + "\n")
    png = RESULTS / "scaling.png"
    plot(curves, png, args.samples)
    print(f"\nplot: {png}\nwall time: {elapsed:.0f} s")
    usage = {
        dataset: {
            "completion_tokens": sum(d.usage["completion_tokens"] for d in found),
            "prompt_tokens": sum(d.usage["prompt_tokens"] for d in found),
            "eflops": sum(d.usage["eflops"] for d in found),
            "seconds": round(sum(d.seconds for d in found), 1),
        }
        for dataset, found in draws.items()
        if found
    }
    result = {
        "benchmark": "scaling",
        "quick": args.quick,
        "design": "one draw of --samples per question; N by prefix and bootstrap subsampling",
        "samples": args.samples,
        "temperature": args.temperature,
        "judge": not args.no_judge,
        "curves": curves,
        "usage": usage,
        "judge_scores": judge,
        "plot": str(png),
        "seconds": round(elapsed, 1),
    }
    print_result(result, RESULTS / "result.json")


if __name__ == "__main__":
    main()

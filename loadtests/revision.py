"""Sequential revision versus best-of-N at equal completion tokens, side by side, on two-digit arithmetic and
a GSM8K test sample. Both get the same token budget per question and majority selection (no verifier), and,
separately, a reference verifier (an oracle: what a perfect verifier would buy each strategy).

    .venv/bin/python -m loadtests.revision [--quick] [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path
from typing import Any

import httpx

from loadtests.harness import ROOT, print_result, running_service

RESULTS = ROOT / "loadtests" / "results" / "revision"
GSM8K = Path("/work/shared/data/gsm8k/test.jsonl")


def arithmetic(count: int, rng: random.Random) -> list[tuple[str, str]]:
    pairs = [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(count)]
    return [(f"What is {a} + {b}? Answer with just the number.", str(a + b)) for a, b in pairs]


def gsm8k(count: int, rng: random.Random) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines() if line.strip()]
    chosen = rng.sample(rows, min(count, len(rows)))
    return [
        (
            f"{row['question']}\nEnd with 'The answer is N'.",
            row["answer"].split("####")[-1].strip().replace(",", ""),
        )
        for row in chosen
    ]


async def solve(
    client: httpx.AsyncClient,
    gate: asyncio.Semaphore,
    strategy: str,
    question: str,
    answer: str,
    tokens: int,
    max_tokens: int,
    oracle: bool,
) -> tuple[bool, int]:
    body: dict[str, Any] = {
        "prompt": question,
        "strategy": strategy,
        "budget": {"tokens": tokens},
        "sampling": {"max_tokens": max_tokens},
    }
    if oracle:
        body["verifier"] = {"name": "reference", "answer": answer}
        body["params"] = {"selection": "max"}
    async with gate:
        response = await client.post("/v1/solve", json=body)
    if response.status_code != 200:
        return False, 0
    result = response.json()
    return result["answer"] == answer, int(result["usage"]["completion_tokens"])


async def compare(url: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    tasks = {
        "arithmetic": (arithmetic(args.arithmetic, rng), args.arithmetic_tokens, 32),
        "gsm8k": (gsm8k(args.gsm8k, rng), args.gsm8k_tokens, 192),
    }
    gate = asyncio.Semaphore(args.concurrency)
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url, timeout=1800) as client:
        for name, (questions, tokens, max_tokens) in tasks.items():
            if not questions:
                continue
            for oracle in (False, True):
                row: dict[str, Any] = {}
                for strategy in ("best_of_n", "revision"):
                    outcomes = await asyncio.gather(
                        *(
                            solve(client, gate, strategy, q, a, tokens, max_tokens, oracle)
                            for q, a in questions
                        )
                    )
                    row[strategy] = {
                        "accuracy": round(sum(ok for ok, _ in outcomes) / len(outcomes), 4),
                        "completion_tokens": round(sum(t for _, t in outcomes) / len(outcomes), 1),
                    }
                bon, rev = row["best_of_n"]["accuracy"], row["revision"]["accuracy"]
                row["ratio_revision_over_best_of_n"] = round(rev / bon, 3) if bon else None
                key = f"{name}{'_oracle' if oracle else ''}"
                results[key] = row
                print(
                    f"{key:<18} budget {tokens:>5} tokens  best-of-N {bon:5.1%} "
                    f"({row['best_of_n']['completion_tokens']:.0f} tok)  revision {rev:5.1%} "
                    f"({row['revision']['completion_tokens']:.0f} tok)"
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="use this running service instead of starting one")
    parser.add_argument("--quick", action="store_true", help="8 arithmetic and 2 GSM8K questions")
    parser.add_argument("--arithmetic", type=int, default=60, help="two-digit additions (default 60)")
    parser.add_argument("--gsm8k", type=int, default=20, help="GSM8K test questions (default 20)")
    parser.add_argument(
        "--arithmetic-tokens", type=int, default=256, help="token budget per arithmetic question"
    )
    parser.add_argument("--gsm8k-tokens", type=int, default=768, help="token budget per GSM8K question")
    parser.add_argument("--seed", type=int, default=0, help="question sampling seed")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    args = parser.parse_args()
    if args.quick:
        args.arithmetic, args.gsm8k, args.gsm8k_tokens = 8, 2, 384
    with running_service(args.url, RESULTS) as url:
        results = asyncio.run(compare(url, args))
    print_result({"benchmark": "revision", "results": results})


if __name__ == "__main__":
    main()

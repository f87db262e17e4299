"""Verifier calibration: completeness c = P(accept | correct) and soundness s = P(reject | wrong), measured.

Candidates are sampled through the engine for labelled questions, labelled by the reference checker, and
scored by the verifier under test; c and s are Laplace-smoothed ((x + 1) / (n + 2)) so that a handful of
examples never claims a perfect verifier. The result goes to Redis, where `auto` and GET /v1/verifiers read it.

CLI (talks to a running service): python -m strategies.allocation.calibrate --url URL --verifier judge \
    --family gsm8k --data /work/shared/data/gsm8k/train.jsonl --limit 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.runtime.budget import BudgetTracker
from service.runtime.concurrency import gather_or_cancel
from service.runtime.engine import Engine, SamplingSpec
from service.runtime.errors import BudgetExhausted
from service.runtime.settings import Settings
from service.store.allocation import VerifierCalibration, now
from verifiers import build_verifier
from verifiers.answers import AnswerSpec, answers_equal, extract_answer

CONCURRENCY = 8


@dataclass(frozen=True)
class Counts:
    correct_accepted: int = 0
    correct: int = 0
    wrong_rejected: int = 0
    wrong: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.correct_accepted + other.correct_accepted,
            self.correct + other.correct,
            self.wrong_rejected + other.wrong_rejected,
            self.wrong + other.wrong,
        )


def count(labels: Sequence[bool], scores: Sequence[float], threshold: float) -> Counts:
    counts = Counts()
    for correct, score in zip(labels, scores, strict=True):
        accepted = score >= threshold
        counts += Counts(
            int(correct and accepted), int(correct), int(not correct and not accepted), int(not correct)
        )
    return counts


def calibration_of(verifier: str, family: str, counts: Counts, threshold: float) -> VerifierCalibration:
    return VerifierCalibration(
        verifier=verifier,
        family=family,
        completeness=round((counts.correct_accepted + 1) / (counts.correct + 2), 4),
        soundness=round((counts.wrong_rejected + 1) / (counts.wrong + 2), 4),
        correct_examples=counts.correct,
        wrong_examples=counts.wrong,
        threshold=threshold,
        source="measured",
        measured_at=now(),
    )


async def measure(
    *,
    engine: Engine,
    settings: Settings,
    budget: BudgetTracker,
    verifier_name: str,
    options: dict[str, Any],
    examples: Sequence[tuple[str, str]],
    samples: int,
    sampling: SamplingSpec,
    answer: AnswerSpec,
    threshold: float,
) -> Counts:
    """Sample, label and score every example (a few at a time) and count accepts and rejects, all of it
    (samples and verifier calls) under one `budget`: once it cannot pay for more, the examples left are
    skipped and the counts are what was measured (BudgetExhausted if that is nothing)."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(question: str, reference: str) -> Counts:
        async with gate:
            try:
                return await label_and_score(question, reference)
            except BudgetExhausted:
                return Counts()

    async def label_and_score(question: str, reference: str) -> Counts:
        prompt = engine.render_chat([{"role": "user", "content": question}])
        spec = SamplingSpec(
            n=samples,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=sampling.stop,
        )
        generation = await budget.generate(engine, prompt, spec)
        texts = [sample.text for sample in generation.samples]
        labels = [answers_equal(extract_answer(text, answer), reference, answer) for text in texts]
        verifier_options = {**options, "answer": reference} if verifier_name == "reference" else options
        verifier = build_verifier(
            verifier_name, verifier_options, engine, budget, answer, settings.reward_models
        )
        scores = await verifier.score(question, texts)
        return count(labels, scores, threshold)

    results = await gather_or_cancel(*(one(question, reference) for question, reference in examples))
    total = sum(results, Counts())
    if total.correct + total.wrong == 0:
        raise BudgetExhausted("The budget paid for no candidate of any example.", param="budget")
    return total


def main(argv: list[str] | None = None) -> None:
    import httpx

    parser = argparse.ArgumentParser(
        prog="python -m strategies.allocation.calibrate",
        description="Measure a verifier's completeness and soundness on labelled JSONL data through a running "
        "service (POST /v1/verifiers/{name}/calibrate); the result is stored in Redis.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    parser.add_argument("--verifier", default="judge", help="verifier name")
    parser.add_argument("--family", default="default", help="task family the numbers apply to")
    parser.add_argument(
        "--data", required=True, help="JSONL with question and answer (GSM8K's #### form works)"
    )
    parser.add_argument("--limit", type=int, default=40, help="examples to use")
    parser.add_argument("--samples", type=int, default=4, help="candidates per question")
    parser.add_argument("--max-tokens", type=int, default=256, help="longest candidate")
    args = parser.parse_args(argv)
    examples = []
    with open(args.data) as handle:
        for line in handle:
            row = json.loads(line)
            answer = str(row["answer"]).split("####")[-1].strip().replace(",", "")
            examples.append({"question": row["question"], "answer": answer})
            if len(examples) >= args.limit:
                break
    body = {
        "family": args.family,
        "examples": examples,
        "samples_per_question": args.samples,
        "sampling": {"max_tokens": args.max_tokens},
    }
    response = httpx.post(f"{args.url}/v1/verifiers/{args.verifier}/calibrate", json=body, timeout=3600)
    print(json.dumps(response.json()))
    sys.exit(0 if response.status_code == 200 else 1)


if __name__ == "__main__":
    main()

"""Reference checker: the exact answer is known (evaluation, calibration). Scores 1 for a match, else 0."""

from __future__ import annotations

from collections.abc import Sequence

from verifiers.answers import AnswerSpec, answers_equal, extract_answer


class ReferenceVerifier:
    name = "reference"

    def __init__(self, reference: str, spec: AnswerSpec) -> None:
        self.reference = reference
        self.spec = spec

    async def score(self, question: str, candidates: Sequence[str]) -> list[float]:
        return [
            1.0 if answers_equal(extract_answer(text, self.spec), self.reference, self.spec) else 0.0
            for text in candidates
        ]

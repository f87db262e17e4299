"""The verifier interface: `score(question, candidates) -> scores in [0, 1]`, one per candidate.

A verifier is built per request (with that request's options, engine and budget), so its engine calls are
charged to the request and its options never leak into another request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Verifier(Protocol):
    name: str

    async def score(self, question: str, candidates: Sequence[str]) -> list[float]:
        """One score in [0, 1] per candidate: the verifier's belief that the candidate is correct."""
        ...

"""Choosing one answer among candidates: majority vote, verifier-weighted vote (Snell et al.'s
"weighted best-of-N"), the single best-scored candidate, or DeepConf's offline vote (the most confident
traces, weighted by their confidence)."""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from strategies.base import Candidate
from strategies.confidence import keep_top

Selection = Literal["majority", "weighted", "max"]


def answer_weights(candidates: list[Candidate], selection: Selection) -> dict[str, float]:
    """Total weight behind each distinct answer: counts for majority, summed scores for weighted."""
    weights: dict[str, float] = defaultdict(float)
    for candidate in candidates:
        if candidate.answer is None:
            continue
        weights[candidate.answer] += 1.0 if selection == "majority" else (candidate.score or 0.0)
    return dict(weights)


def select(candidates: list[Candidate], selection: Selection) -> Candidate | None:
    """The chosen candidate; also fills in `votes` (candidates sharing its answer) on every candidate."""
    if not candidates:
        return None
    counts: dict[str | None, int] = defaultdict(int)
    for candidate in candidates:
        counts[candidate.answer] += 1
    for candidate in candidates:
        candidate.votes = counts[candidate.answer] if candidate.answer is not None else 0

    def best_scored(group: list[Candidate]) -> Candidate:
        return max(group, key=lambda candidate: candidate.score if candidate.score is not None else 0.0)

    if selection == "max":
        return best_scored(candidates)
    weights = answer_weights(candidates, selection)
    if not weights:
        return best_scored(candidates)
    order = {answer: position for position, answer in reversed(list(enumerate(c.answer for c in candidates)))}
    scores = answer_weights(candidates, "weighted")
    winner = max(weights, key=lambda answer: (weights[answer], scores.get(answer, 0.0), -order[answer]))
    return best_scored([candidate for candidate in candidates if candidate.answer == winner])


def ranked(candidates: list[Candidate], selection: Selection) -> list[Candidate]:
    """Candidates best first: by their answer's weight, then their own score (for OpenAI's n > 1)."""
    weights = answer_weights(candidates, "weighted" if selection == "max" else selection)
    return sorted(
        candidates,
        key=lambda candidate: (
            candidate.score if selection == "max" and candidate.score is not None else 0.0,
            weights.get(candidate.answer or "", 0.0) if candidate.answer is not None else -1.0,
            candidate.score or 0.0,
        ),
        reverse=True,
    )


def cannot_be_overtaken(candidates: list[Candidate], selection: Selection, samples_left: int) -> bool:
    """True when even if every remaining sample agreed on the runner-up, the leader would still win."""
    weights = sorted(answer_weights(candidates, selection).values(), reverse=True)
    if not weights:
        return False
    leader = weights[0]
    runner_up = weights[1] if len(weights) > 1 else 0.0
    return leader - runner_up > samples_left


def confident(candidates: list[Candidate], keep_percent: float) -> Candidate | None:
    """DeepConf offline (Fu et al. 2025) over candidates whose `score` is their trace confidence: the top
    `keep_percent`% vote, weighted by it; the rest get no votes. With no confidence at all, a plain majority."""
    scored = [candidate for candidate in candidates if candidate.score is not None]
    if not scored:
        return select(candidates, "majority")
    keep = keep_top([candidate.score or 0.0 for candidate in scored], keep_percent)
    voters = [candidate for candidate, kept in zip(scored, keep, strict=True) if kept]
    chosen = select(voters, "weighted")
    voting = {id(candidate) for candidate in voters}
    for candidate in candidates:
        if id(candidate) not in voting:
            candidate.votes = 0
    return chosen

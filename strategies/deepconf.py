"""DeepConf (Fu et al. 2025): best-of-N that listens to the model's own token confidence.

Offline: draw N traces to the end with their top-k logprobs, keep the top eta% by a trace confidence
(strategies/confidence.py), and vote weighted by that confidence.

Online: a few warm-up traces set a threshold (the (100 - eta)th percentile of their lowest group confidence).
Every further trace is its own engine call, streamed with logprobs; the moment one of its sliding windows falls
below the threshold the call is aborted in the engine (the tokens it wrote are charged like any others) and the
trace does not vote. The warm-up traces and every trace that ran to its end vote, weighted by confidence. Sampling stops once the leading answer holds `consensus` of the confidence-weighted vote, or
when N traces are drawn or the budget ends. Traces run `round_size` at a time, so the engine still batches them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.runtime.budget import BudgetTracker
from service.runtime.concurrency import gather_or_cancel
from service.runtime.engine import STOPPED, Engine, Sample, SamplingSpec
from service.runtime.errors import BudgetExhausted
from strategies.base import Candidate, Result, Task, parse_params
from strategies.best_of_n import planned_samples
from strategies.confidence import (
    Metric,
    TraceConfidence,
    WindowMonitor,
    consensus,
    keep_threshold,
    token_confidence,
    weighted_votes,
)
from strategies.selection import select
from verifiers.answers import extract_answer
from verifiers.base import Verifier

DEFAULT_TRACES = 16


class DeepConfParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["online", "offline"] = Field(
        "online", description="`online`: stop weak traces while they run and stop sampling at consensus."
    )
    n: int | None = Field(
        None,
        ge=1,
        le=1024,
        description=f"Most traces to draw; default: as many as the budget pays for ({DEFAULT_TRACES} without one).",
    )
    warmup: int = Field(3, ge=1, le=256, description="Online: traces drawn to the end to set the threshold.")
    keep_percent: float = Field(
        10.0,
        gt=0,
        le=100,
        description="eta: the top eta% of traces by confidence survive (offline), or the percentile of the "
        "warm-up's lowest group confidence a trace must stay above (online: threshold = its (100-eta)th).",
    )
    window: int = Field(4, ge=1, le=4096, description="Tokens per sliding-window group.")
    tail: int = Field(32, ge=1, le=4096, description="Tokens of the tail confidence.")
    top_logprobs: int = Field(
        20, ge=1, le=20, description="k: the most likely tokens per position a token's confidence averages."
    )
    metric: Metric = Field(
        "lowest_group",
        description="Trace confidence for offline filtering and for the vote's weights: lowest_group, bottom10, "
        "tail or mean.",
    )
    vote: Literal["weighted", "majority"] = Field(
        "weighted", description="Among the surviving traces: confidence-weighted vote, or plain counts."
    )
    consensus: float = Field(
        0.8,
        gt=0.5,
        le=1.0,
        description="Online: stop sampling once the leader holds this share of the vote.",
    )
    round_size: int = Field(
        2, ge=1, le=256, description="Online: traces generated at once after the warm-up."
    )


@dataclass
class Trace:
    """One sampled trace and what DeepConf made of it."""

    index: int
    phase: Literal["warmup", "online", "offline"]
    sample: Sample
    confidences: list[float]
    answer: str | None
    confidence: TraceConfidence
    stopped_at: int | None = None  # tokens it had written when it was stopped (online)
    voted: bool = False
    weight: float = 0.0

    @property
    def finished(self) -> bool:
        return self.sample.finish_reason != STOPPED

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "phase": self.phase,
            "tokens": self.sample.tokens,
            "finish_reason": self.sample.finish_reason,
            "stopped_at": self.stopped_at,
            "answer": self.answer,
            "voted": self.voted,
            "confidence": {
                name: round(value, 4) for name, value in dataclasses.asdict(self.confidence).items()
            },
        }


@dataclass
class Run:
    """One request's DeepConf state."""

    task: Task
    engine: Engine
    budget: BudgetTracker
    params: DeepConfParams
    traces: list[Trace] = field(default_factory=list)
    threshold: float | None = None
    stopped_because: str = "n"

    def spec(self, n: int, first: int) -> SamplingSpec:
        """The request's sampling with logprobs; a seeded request seeds each call by its first trace's index,
        so one-trace calls do not all draw the same trace."""
        seed = self.task.sampling.seed
        return dataclasses.replace(
            self.task.sampling,
            n=n,
            logprobs=self.params.top_logprobs,
            seed=None if seed is None else seed + first,
        )

    def trace(self, sample: Sample, phase: Literal["warmup", "online", "offline"]) -> Trace:
        confidences = sample_confidences(sample, self.params.top_logprobs)
        stopped = sample.finish_reason == STOPPED
        return Trace(
            len(self.traces),
            phase,
            sample,
            confidences,
            None if stopped else extract_answer(sample.text, self.task.answer),
            TraceConfidence.of(confidences, self.params.window, self.params.tail),
            stopped_at=sample.tokens if stopped else None,
        )


def sample_confidences(sample: Sample, k: int) -> list[float]:
    """Token confidences of a sample, one per token the engine sent logprobs for (every token, as asked)."""
    return [token_confidence([value for _, value in entry.top], k) for entry in sample.logprobs or []]


def weigh(run: Run, trace: Trace, passes: bool) -> None:
    """A trace votes when it finished with an answer and passed the filter; its weight is its confidence."""
    trace.voted = trace.finished and trace.answer is not None and passes
    weight = trace.confidence.get(run.params.metric) if run.params.vote == "weighted" else 1.0
    trace.weight = weight if trace.voted else 0.0


def tally(run: Run, traces: list[Trace]) -> dict[str, float]:
    """Online, as in the paper's algorithm: every warm-up trace votes, and every later trace that was not
    stopped (it never fell below the threshold); each weighted by its confidence."""
    for trace in traces:
        weigh(run, trace, True)
    return weighted_votes([t.answer for t in traces if t.voted], [t.weight for t in traces if t.voted])


async def draw(run: Run, count: int, phase: Literal["warmup", "offline"]) -> list[Trace]:
    """`count` traces in one engine call, each to its end."""
    generation = await run.budget.generate(run.engine, run.task.prompt, run.spec(count, len(run.traces)))
    traces = []
    for sample in generation.samples:
        traces.append(run.trace(sample, phase))
        run.traces.append(traces[-1])
    return traces


async def draw_watched(run: Run, threshold: float, index: int, round_size: int) -> Trace | None:
    """One online trace, stopped in the engine when a full window's confidence falls below `threshold`;
    None if the budget cannot pay for it. The `round_size` traces of a round run together in the engine's
    batch, like the samples of one call, and are charged so (their weight reads shared)."""
    monitor = WindowMonitor(run.params.window, threshold)
    seen = 0

    def weak(sample: Sample) -> bool:
        nonlocal seen
        entries = sample.logprobs or []
        stop = False
        for entry in entries[seen:]:
            stop = monitor.push(token_confidence([value for _, value in entry.top], run.params.top_logprobs))
            if stop:
                break
        seen = len(entries)
        return stop

    try:
        generation = await run.budget.generate(
            run.engine, run.task.prompt, run.spec(1, index), stop=weak, weight_share=round_size
        )
    except BudgetExhausted:
        return None
    trace = run.trace(generation.samples[0], "online")
    run.traces.append(trace)
    return trace


async def online(run: Run, target: int) -> None:
    params, task = run.params, run.task
    warmup = await draw(run, min(params.warmup, target), "warmup")
    run.threshold = keep_threshold([trace.confidence.lowest_group for trace in warmup], params.keep_percent)
    task.report({"event": "warmup", "traces": len(warmup), "threshold": run.threshold})
    while True:
        _, share = consensus(tally(run, run.traces))
        if share >= params.consensus:
            run.stopped_because = "consensus"
            return
        left = target - len(run.traces)
        if left <= 0:
            run.stopped_because = "n"
            return
        if run.budget.expired():
            run.stopped_because = "deadline"
            return
        threshold = run.threshold
        size = min(params.round_size, left)
        drawn = await gather_or_cancel(
            *(draw_watched(run, threshold, len(run.traces) + i, size) for i in range(size))
        )
        if all(trace is None for trace in drawn):
            run.stopped_because = "budget"
            return
        task.report(
            {
                "event": "round",
                "traces": len(run.traces),
                "stopped": sum(not t.finished for t in run.traces),
                "tokens": run.budget.spend.completion_tokens,
            }
        )


async def offline(run: Run, target: int) -> None:
    traces = await draw(run, target, "offline")
    values = [trace.confidence.get(run.params.metric) for trace in traces]
    run.threshold = keep_threshold(values, run.params.keep_percent) if values else None
    for trace, value in zip(traces, values, strict=True):  # offline filters on the chosen metric
        weigh(run, trace, run.threshold is None or value >= run.threshold)


def savings(run: Run, target: int) -> dict[str, Any]:
    """Tokens spent against an estimate of drawing all `target` traces to their end: a stopped trace would
    have run to the mean length of the finished ones (at least to where it was stopped), an undrawn trace as
    long as that mean."""
    finished = [t.sample.tokens for t in run.traces if t.finished]
    mean_length = sum(finished) / len(finished) if finished else float(run.task.sampling.max_tokens)
    spent = sum(t.sample.tokens for t in run.traces)
    full = sum(t.sample.tokens if t.finished else max(t.sample.tokens, mean_length) for t in run.traces)
    full += max(target - len(run.traces), 0) * mean_length
    return {
        "trace_tokens": spent,
        "all_traces_tokens_estimate": round(full),
        "tokens_saved_estimate": round(max(full - spent, 0.0)),
        "saved_fraction_estimate": round(1 - spent / full, 4) if full > 0 else 0.0,
    }


async def run(task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker) -> Result:
    params = parse_params(DeepConfParams, task.params)
    requested = params.n if params.n is not None or task.budget_given else DEFAULT_TRACES
    target = planned_samples(task, engine, budget, requested)
    state = Run(task, engine, budget, params)
    try:
        await (online(state, target) if params.mode == "online" else offline(state, target))
    except BudgetExhausted:
        if not state.traces:
            raise
        state.stopped_because = "budget"
    if params.mode == "offline":
        state.stopped_because = "n"

    if not any(trace.voted for trace in state.traces):  # nobody passed the filter: every finished trace votes
        for trace in state.traces:
            weigh(state, trace, True)
        fallback = True
    else:
        fallback = False
    # A candidate's score is its trace's confidence (what the weighted vote sums).
    candidates = [
        Candidate(
            t.sample.text,
            t.answer,
            t.sample.tokens,
            t.sample.finish_reason,
            score=round(t.confidence.get(params.metric), 6),
        )
        for t in state.traces
    ]
    voters = [candidate for candidate, trace in zip(candidates, state.traces, strict=True) if trace.voted]
    chosen = select(voters, "weighted" if params.vote == "weighted" else "majority")
    voting = {id(candidate) for candidate in voters}
    for candidate in candidates:
        if id(candidate) not in voting:
            candidate.votes = 0
    votes = weighted_votes(
        [t.answer for t in state.traces if t.voted], [t.weight for t in state.traces if t.voted]
    )
    leader, share = consensus(votes)
    stopped = [t for t in state.traces if not t.finished]
    details = {
        "mode": params.mode,
        "threshold": state.threshold,
        "stopped_because": state.stopped_because,
        "traces_drawn": len(state.traces),
        "traces_stopped": len(stopped),
        "traces_voting": len(voters),
        "vote_fallback": fallback,
        "votes": {answer: round(weight, 4) for answer, weight in sorted(votes.items(), key=lambda i: -i[1])},
        "consensus": round(share, 4) if leader is not None else None,
        **savings(state, target),
        "traces": [trace.describe() for trace in state.traces],
    }
    used = params.model_dump()
    used["n"] = target
    return Result(
        text=chosen.text if chosen else "",
        answer=chosen.answer if chosen else None,
        candidates=candidates,
        params=used,
        details=details,
    )

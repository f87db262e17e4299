"""Plans for a busy engine (Dynasor's point: under load, spend less per request so more requests meet their SLO).

The runtime model's per-token slope grows with the batch: `g(n) = g1 + g2 n` (allocation/costs.py). On a busy
engine a new call shares every decode step with the sequences already running or waiting, so its slope is
`g1 + g2 (n + sequences)`: the same plan takes longer, and a plan that no longer fits the request's seconds
cap is not chosen (both goals). With the `latency` goal the token and eFLOPs caps the plans must fit also shrink
by that slowdown: each request spends less while the engine is busy, so the queue drains and more requests
finish within their seconds. With `accuracy` only the seconds prediction changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from service.runtime.load import EngineLoad
from strategies.allocation.costs import CallShape, SecondsModel
from strategies.allocation.plans import Caps

Goal = Literal["latency", "accuracy"]


@dataclass(frozen=True)
class LoadAdjustment:
    load: EngineLoad | None
    goal: Goal
    seconds_model: SecondsModel  # the runtime model on this load
    slowdown: float  # one full-length sample's predicted seconds on this load over on an idle engine
    cap_factor: float  # what the token and eFLOPs caps are multiplied by (latency goal), else 1

    @property
    def active(self) -> bool:
        return self.load is not None and self.load.sequences > 0

    def caps(self, caps: Caps) -> Caps:
        if self.cap_factor >= 1.0:
            return caps
        return Caps(
            None if caps.tokens is None else max(int(caps.tokens * self.cap_factor), 1),
            None if caps.eflops is None else caps.eflops * self.cap_factor,
            caps.seconds,
        )

    def describe(self) -> dict[str, Any]:
        return {
            **(self.load.describe() if self.load is not None else {"source": "not reported by the engine"}),
            "goal": self.goal,
            "slowdown": round(self.slowdown, 3),
            "cap_factor": round(self.cap_factor, 3),
        }


# g2 / g1 of the default runtime model: what one more sequence in the batch adds to a token's time when the fit
# saw no batch effect (its calls all had about the same batch; least squares then clips g2 to 0).
DEFAULT_BATCH_RATIO = SecondsModel().per_token_per_sample / SecondsModel().per_token


def loaded(model: SecondsModel, sequences: int) -> SecondsModel:
    """The runtime model with `sequences` more sequences in every decode step's batch."""
    per_sequence = max(model.per_token_per_sample, DEFAULT_BATCH_RATIO * model.per_token)
    return replace(model, per_token=model.per_token + per_sequence * max(sequences, 0))


def adjust(
    model: SecondsModel, load: EngineLoad | None, goal: Goal, prompt_tokens: int, max_tokens: int
) -> LoadAdjustment:
    if load is None or load.sequences <= 0:
        return LoadAdjustment(load, goal, model, 1.0, 1.0)
    busy = loaded(model, load.sequences)
    sample = CallShape(prompt_tokens, 1, float(max_tokens), max_tokens)
    idle_seconds = model.predict(sample)
    slowdown = busy.predict(sample) / idle_seconds if idle_seconds > 0 else 1.0
    return LoadAdjustment(load, goal, busy, slowdown, 1.0 / slowdown if goal == "latency" else 1.0)

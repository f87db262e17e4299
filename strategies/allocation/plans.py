"""The plan space: every (strategy, parameters) the allocator may choose, with predicted accuracy and cost.

A plan builder takes the prompt's `Situation` (difficulty estimate, verifier calibration, costs) and returns
candidate plans. `PLAN_BUILDERS` maps a strategy name to its builder; a strategy without a builder of its own
gets plans from its measured profile (`profiles/<name>.json`) once it is registered in `STRATEGIES`. So adding
a strategy to `auto` is adding a profile, plus a builder entry only if it has a closed form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.runtime.cost import Hardware, ModelShape
from service.store.allocation import VerifierCalibration
from strategies.allocation import formulas
from strategies.allocation.costs import (
    CallShape,
    SecondsModel,
    call_eflops,
    call_worst_eflops,
    lockstep,
    log_bins,
)
from strategies.allocation.profiles import Profile

Mixture = list[tuple[float, float]]


@dataclass(frozen=True)
class Caps:
    """What is left of the budget when the plan starts (None: no cap on that axis)."""

    tokens: int | None
    eflops: float | None
    seconds: float | None


@dataclass
class Situation:
    """Everything known about this prompt when the plan is chosen (after the probe)."""

    prompt_tokens: int
    max_tokens: int
    expected_tokens: float
    probe_samples: int
    signature: int
    mixture: Mixture
    wrong_shares: list[float]
    verifier: str | None
    calibration: VerifierCalibration | None
    verifier_call: CallShape | None
    probe_scored: bool
    false_positive_penalty: float
    cost_weight: float
    shape: ModelShape
    hardware: Hardware
    count_weight_loading: bool
    seconds_model: SecondsModel
    caps: Caps
    budget_scale: float  # eFLOPs the cost_weight refers to (the request's whole budget)
    max_samples: int
    profiles: dict[str, Profile] = field(default_factory=dict)
    # a batch's round: calls of that many prompts start together, at most `in_flight` samples run at once
    # (None: no limit), and the calls the engine runs together share the weight reads; 1 for one request
    round_calls: int = 1
    in_flight: int | None = None

    def weight_share(self, samples: int) -> int:
        """The share of the weight reads one call of `samples` of this prompt pays (see costs.lockstep)."""
        return lockstep(self.round_calls, samples, self.in_flight)

    @property
    def p_mean(self) -> float:
        return sum(w * r for w, r in self.mixture)

    def sample_eflops(self) -> float:
        call = CallShape(self.prompt_tokens, 1, self.expected_tokens, self.max_tokens)
        return call_eflops(self.shape, self.hardware, call, self.count_weight_loading, self.weight_share(1))


@dataclass
class Plan:
    strategy: str
    params: dict[str, Any]
    uses_verifier: bool
    accuracy: float
    answered_wrong: float  # P(an answer is given and it is wrong): what the penalty applies to
    calls: list[CallShape]
    eflops: float
    worst_eflops: float
    worst_tokens: int
    seconds: float
    basis: str  # "closed form" or "measured profile"
    utility: float = 0.0
    score: float = 0.0
    samples: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "params": self.params,
            "uses_verifier": self.uses_verifier,
            "predicted_accuracy": round(self.accuracy, 4),
            "predicted_wrong_answer": round(self.answered_wrong, 4),
            "expected_utility": round(self.utility, 4),
            "predicted_eflops": self.eflops,
            "predicted_seconds": round(self.seconds, 3),
            "basis": self.basis,
        }


def fits(situation: Situation, plan: Plan) -> bool:
    """The hard cap: the plan's worst case must fit what is left (seconds on the predicted time)."""
    caps = situation.caps
    if caps.tokens is not None and plan.worst_tokens > caps.tokens:
        return False
    if caps.eflops is not None and plan.worst_eflops > caps.eflops:
        return False
    return caps.seconds is None or plan.seconds <= caps.seconds


def _costed(
    situation: Situation, calls: list[CallShape], verifier_calls: int
) -> tuple[float, float, int, float]:
    """(expected eFLOPs, worst eFLOPs, worst tokens, predicted seconds) of sampling calls plus verifier calls."""
    s = situation
    eflops = sum(
        call_eflops(s.shape, s.hardware, c, s.count_weight_loading, s.weight_share(c.samples)) for c in calls
    )
    worst = sum(
        call_worst_eflops(s.shape, s.hardware, c, s.count_weight_loading, s.weight_share(c.samples))
        for c in calls
    )
    tokens = sum(c.samples * c.max_tokens for c in calls)
    seconds = sum(s.seconds_model.predict(c) for c in calls)
    if verifier_calls and s.verifier_call is not None:
        v = s.verifier_call
        one = call_eflops(s.shape, s.hardware, v, s.count_weight_loading)  # each verifier call on its own
        eflops += verifier_calls * one
        worst += verifier_calls * call_worst_eflops(s.shape, s.hardware, v, s.count_weight_loading)
        tokens += verifier_calls * v.max_tokens
        # Verifier calls run in parallel: one batch of them, the prompt time of each.
        seconds += s.seconds_model.predict(
            CallShape(v.prompt_tokens * verifier_calls, 1, v.expected_tokens, v.max_tokens)
        )
    return eflops, worst, tokens, seconds


def _mixture_accuracy(mixture: Mixture, accuracy: Callable[[float], float]) -> float:
    return sum(weight * accuracy(r) for weight, r in mixture)


def best_of_n_plans(situation: Situation) -> list[Plan]:
    """Best-of-N at total sample counts k, 2k, 4k, ... (the probe's k samples included), by selection rule.

    Majority: the plurality closed form at each p of the difficulty mixture (or the measured profile).
    Weighted vote with a verifier: the plurality among the samples the verifier accepts (c p against
    (1 - p)(1 - s) per wrong answer). Max with abstention: the fLaws resampling formula, whose limit is the
    ceiling c r / (c r + (1 - r)(1 - s)); it answers only when the verifier accepts something.
    """
    s = situation
    k = s.probe_samples
    profile = s.profiles.get("best_of_n")
    plans: list[Plan] = []
    totals = sorted({k, *[n for n in log_bins(1, s.max_samples) if n > k]} - {0})
    rules = ["majority"]
    if s.verifier is not None and s.calibration is not None:
        rules += ["weighted", "max"]
    c = s.calibration.completeness if s.calibration else 1.0
    sound = s.calibration.soundness if s.calibration else 0.0
    for rule in rules:
        for total in totals:
            extra = total - k
            calls = [CallShape(s.prompt_tokens, extra, s.expected_tokens, s.max_tokens)] if extra else []
            verifier_calls = 0
            if rule != "majority":
                verifier_calls = extra + (0 if s.probe_scored else k)
            eflops, worst, tokens, seconds = _costed(s, calls, verifier_calls)
            measured = profile.measured(rule, s.signature, total) if profile else None
            if rule == "majority":

                def majority(r: float, total: int = total) -> float:
                    return formulas.plurality_win(total, r, [(1 - r) * q for q in s.wrong_shares])

                accuracy = measured if measured is not None else _mixture_accuracy(s.mixture, majority)
                wrong = 1.0 - accuracy
            elif rule == "weighted":

                def weighted(r: float, total: int = total) -> float:
                    a = formulas.attempt(r, c, sound)
                    accepted_vote = formulas.plurality_win(
                        total, a.accepted_correct, [a.accepted_wrong * q for q in s.wrong_shares]
                    )
                    nothing_accepted = a.rejected**total
                    fallback = formulas.plurality_win(total, r, [(1 - r) * q for q in s.wrong_shares])
                    return accepted_vote + nothing_accepted * fallback

                accuracy = measured if measured is not None else _mixture_accuracy(s.mixture, weighted)
                wrong = 1.0 - accuracy
            else:

                def resample_correct(r: float, total: int = total) -> float:
                    return formulas.correct_within(formulas.attempt(r, c, sound), total)

                def resample_wrong(r: float, total: int = total) -> float:
                    return formulas.false_positive_within(formulas.attempt(r, c, sound), total)

                accuracy = _mixture_accuracy(s.mixture, resample_correct)
                wrong = _mixture_accuracy(s.mixture, resample_wrong)
                measured = None
            params: dict[str, Any] = {"n": total, "selection": rule}
            if rule == "max":
                params["abstain_below"] = s.calibration.threshold if s.calibration else 0.5
            plans.append(
                Plan(
                    strategy="best_of_n",
                    params=params,
                    uses_verifier=rule != "majority",
                    accuracy=accuracy,
                    answered_wrong=wrong,
                    calls=calls,
                    eflops=eflops,
                    worst_eflops=worst,
                    worst_tokens=tokens,
                    seconds=seconds,
                    basis="measured profile" if measured is not None else "closed form",
                    samples=total,
                )
            )
    return plans


def abstain_plan(situation: Situation) -> Plan:
    """Answer nothing: worth 0 whatever happens, costs nothing more."""
    return Plan("abstain", {}, False, 0.0, 0.0, [], 0.0, 0.0, 0, 0.0, "by definition")


def profile_plans(situation: Situation, profile: Profile) -> list[Plan]:
    """Plans of a strategy known only through its measured profile: accuracy per probe outcome, cost in units
    of one sample of this prompt (the strategy runs under the tracker's hard cap, so its worst case is the
    budget left; it must be predicted to fit)."""
    s = situation
    one = s.sample_eflops()
    plans = []
    for item in profile.plans:
        if item.uses_verifier and s.verifier is None:
            continue
        index = min(max(s.signature, 0), len(item.accuracy) - 1)
        accuracy = item.accuracy[index]
        eflops = item.cost_units * one
        units = max(round(item.cost_units), 1)
        seconds = s.seconds_model.predict(CallShape(s.prompt_tokens, units, s.expected_tokens, s.max_tokens))
        plans.append(
            Plan(
                strategy=profile.strategy,
                params=dict(item.params),
                uses_verifier=item.uses_verifier,
                accuracy=accuracy,
                answered_wrong=1.0 - accuracy,
                calls=[],
                eflops=eflops,
                worst_eflops=eflops,
                worst_tokens=int(units * s.expected_tokens),
                seconds=seconds,
                basis="measured profile",
            )
        )
    return plans


PlanBuilder = Callable[[Situation], list[Plan]]

PLAN_BUILDERS: dict[str, PlanBuilder] = {
    "best_of_n": best_of_n_plans,
}


def candidate_plans(situation: Situation, strategies: set[str], allowed: set[str] | None) -> list[Plan]:
    """Every plan of every strategy that is registered, allowed, and has a builder or a profile."""
    plans = [abstain_plan(situation)]
    names = set(PLAN_BUILDERS) | set(situation.profiles)
    for name in sorted(names):
        if name not in strategies or (allowed is not None and name not in allowed):
            continue
        if name in PLAN_BUILDERS:
            plans += PLAN_BUILDERS[name](situation)
        else:
            plans += profile_plans(situation, situation.profiles[name])
    return plans

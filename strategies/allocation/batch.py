"""One total budget across many prompts (POST /v1/solve/batch): who gets the next samples. Pure: no engine.

`auto` sizes each prompt's plan from that prompt's own cap, so on a mixed set it draws about the same n for
every prompt. Here one cap is shared, so compute can move between prompts:

1. Probe: every prompt gets the same few samples (they join its vote), as many as the budget pays for at once
   in the worst case, and never fewer than the fairness minimum.
2. Rounds: for every prompt still active, auto's own models price its next step. Its difficulty is
   `difficulty.estimate` on every sample drawn so far (the measured profile while that is the profile's probe
   size, PassUntil's Beta posterior after). Its steps are the bigger rungs of auto's best-of-N plan ladder
   (`plans.best_of_n_plans`: the plurality-vote closed form, or the judge-weighted vote with its verifier
   ceiling) and, right after the probe, one whole run of each other strategy auto has a measured profile of
   (DeepConf online, revision; the tree searches with a verifier), priced by that profile; a whole run is the
   prompt's last step and its answer is the prompt's. A prompt answered by the confidence vote is priced by
   that vote's measured accuracy curve for its probe's outcome (the best-of-N profile's `confidence` tables,
   by the probe's agreement and how confident its most confident sample is: `vote_curves`), not by the
   plurality closed form. A step's value is its predicted accuracy gain per expected eFLOP; the prompt's
   best one counts. A round's calls run together in the engine and share every decode step's weight reads
   (`costs.lockstep`), so each is priced, reserved and charged with that share, and a round is priced again
   at its size when fewer calls are chosen than were priced.
3. A round hands out steps best value first until it has reserved `round_share` of what is left (worst cases,
   as the budget tracker reserves them), then every estimate is redone on the new samples (a prompt priced
   by a measured confidence-vote curve keeps its probe's curve: its new samples move it along that curve).
4. A prompt whose next step gains less than `min_gain` accuracy per sample stops: *settled* when its vote is
   already predicted right, *hopeless* when more samples will not make it right. With `consensus`, a prompt
   also stops as settled once its leading answer holds that share of its vote (DeepConf's consensus stop). A
   prompt also stops at its maximum share of the budget or at `max_samples`. The batch ends when no step fits
   what is left.

The answer of a prompt without a whole run is its vote: the verifier-weighted one with a verifier, else the
batch's `vote` (DeepConf's confidence vote by default, or a plain majority).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from service.runtime.concurrency import gather_or_cancel
from service.runtime.cost import Hardware, ModelShape
from service.runtime.errors import BudgetExhausted
from service.store.allocation import VerifierCalibration
from strategies.allocation import difficulty
from strategies.allocation.costs import CallShape, SecondsModel, call_eflops, call_worst_eflops
from strategies.allocation.plans import Caps, Plan, Situation, best_of_n_plans, profile_plans
from strategies.allocation.profiles import Profile
from strategies.base import Candidate
from strategies.selection import answer_weights

Status = Literal["active", "settled", "hopeless", "capped", "unfunded", "budget", "answered"]
SAMPLES = "best_of_n"  # the sample ladder: more samples that join the prompt's vote
# a whole strategy run's own cap, over its predicted cost (it answers with what it has at its cap)
HEADROOM = 1.5
Rule = Literal["majority", "weighted"]
Vote = Literal["majority", "weighted", "confidence"]


@dataclass(frozen=True)
class Fairness:
    """What every prompt is owed and what one prompt may take."""

    min_samples: int = 1  # samples every prompt gets (0 only with allow_abstain)
    max_share: float | None = None  # most of the batch budget (each capped axis) one prompt may use
    allow_abstain: bool = False  # when the budget cannot pay min_samples for all, some prompts get nothing


@dataclass(frozen=True)
class Rules:
    """The allocator's knobs (the request's `allocation` options)."""

    probe_samples: int = 4
    # predicted accuracy per added sample below which a prompt stops: a prompt whose measured curve is flat
    # (settled, or confidently wrong) stops at its probe instead of soaking up what others leave; the batch
    # benchmark's fit split measured 0.002 best of its grid
    min_gain: float = 0.002
    round_share: float = 1.0  # share of what is left (worst case) one round may reserve
    max_samples: int = 64  # most samples one prompt may get
    settled_at: float = 0.5  # predicted accuracy at or above which a stopped prompt is 'settled'
    max_rounds: int = 32
    vote: Literal["majority", "confidence"] = "confidence"  # the final vote of a problem without a verifier
    keep_percent: float = 10.0  # the confidence vote: the top keep_percent% of samples by confidence vote
    consensus: float | None = None  # stop a prompt once its answer holds this share of its (weighted) vote
    # what a prompt may get after its probe (None: the sample ladder and every profiled strategy)
    strategies: frozenset[str] | None = None


@dataclass
class Ledger:
    """What one prompt has got so far, and why it stopped."""

    key: str
    samples: int = 0
    eflops: float = 0.0  # spent on its own samples (and their verifier calls)
    tokens: int = 0
    status: Status = "active"
    reason: str = ""
    p: float = 0.0
    predicted_accuracy: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    answer: Candidate | None = None  # a whole strategy run's own answer (status 'answered')

    def stop(self, status: Status, reason: str) -> None:
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Step:
    """One prompt's next rung: `samples` more, predicted accuracy before and after, its cost."""

    key: str
    samples: int
    accuracy_now: float
    accuracy_after: float
    eflops: float  # expected
    worst_eflops: float  # what the tracker reserves
    worst_tokens: int
    # another strategy: one whole run of it, the prompt's last step (`samples` is then its cost in samples)
    strategy: str = SAMPLES
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def whole(self) -> bool:
        return self.strategy != SAMPLES

    @property
    def gain(self) -> float:
        return max(self.accuracy_after - self.accuracy_now, 0.0)

    @property
    def value(self) -> float:
        """Predicted accuracy gain per expected eFLOP."""
        return self.gain / self.eflops if self.eflops > 0 else math.inf

    def describe(self) -> dict[str, Any]:
        run = {"strategy": self.strategy, "params": self.params, "cost_in_samples": self.samples}
        return {
            **(run if self.whole else {"samples": self.samples}),
            "predicted_accuracy_before": round(self.accuracy_now, 4),
            "predicted_accuracy_after": round(self.accuracy_after, 4),
            "gain_per_eflop": self.value if math.isfinite(self.value) else None,
            "predicted_eflops": self.eflops,
        }


@dataclass
class Remaining:
    """What is left of the batch's caps, counted in worst cases (None: no cap on that axis)."""

    tokens: int | None
    eflops: float | None

    def fits(self, eflops: float, tokens: int) -> bool:
        return (self.tokens is None or tokens <= self.tokens) and (
            self.eflops is None or eflops <= self.eflops
        )

    def take(self, eflops: float, tokens: int) -> None:
        if self.tokens is not None:
            self.tokens -= tokens
        if self.eflops is not None:
            self.eflops -= eflops

    def pays(self, step: Step) -> bool:
        """Whether the step's worst case fits."""
        return self.fits(step.worst_eflops, step.worst_tokens)

    def share(self, fraction: float) -> Remaining:
        return Remaining(
            None if self.tokens is None else int(self.tokens * fraction),
            None if self.eflops is None else self.eflops * fraction,
        )


WorstCost = Callable[[int, int], tuple[float, int]]  # (prompt index, samples) -> (worst eFLOPs, worst tokens)
# a prompt's measured accuracy by its total sample count (None outside the measured range)
Curve = Callable[[int], float | None]
CONFIDENCE_TABLE = "confidence"  # the best-of-N profile's accuracy table of the confidence vote


def probe_sizes(
    count: int,
    worst: WorstCost,
    left: Remaining,
    rules: Rules,
    fairness: Fairness,
    share_cap: Remaining | None = None,
) -> list[int]:
    """Every prompt's probe: the largest common size from max(probe_samples, min_samples) down to
    min_samples whose worst cases all fit at once (each also within `share_cap`, one prompt's maximum share,
    though never below min_samples: the minimum wins). If not even the minimum fits for every prompt: with
    abstention allowed, prompts get the minimum (at least one sample) cheapest first while it fits and the
    rest none; without it, BudgetExhausted (the caller asked for more than the budget can pay)."""
    top = max(rules.probe_samples, fairness.min_samples)
    floor = max(fairness.min_samples, 1)

    def capped(index: int, size: int) -> int:
        while share_cap is not None and size > floor and not share_cap.fits(*worst(index, size)):
            size -= 1
        return size

    for size in range(top, floor - 1, -1):
        sizes = [capped(index, size) for index in range(count)]
        total_eflops, total_tokens = 0.0, 0
        for index, each in enumerate(sizes):
            eflops, tokens = worst(index, each)
            total_eflops += eflops
            total_tokens += tokens
        if left.fits(total_eflops, total_tokens):
            return sizes
    if not fairness.allow_abstain:
        raise BudgetExhausted(
            f"The batch budget cannot pay for {floor} sample(s) of each of the {count} problems (worst case); "
            "raise the budget, lower allocation.min_samples, or set allocation.allow_abstain.",
            param="budget",
        )
    costs = sorted((worst(index, floor), index) for index in range(count))
    sizes = [0] * count
    room = Remaining(left.tokens, left.eflops)
    for (eflops, tokens), index in costs:
        if room.fits(eflops, tokens):
            room.take(eflops, tokens)
            sizes[index] = floor
    return sizes


@dataclass(frozen=True)
class Cost:
    """How the batch's calls are priced: the model, the hardware, the eFLOPs convention, the seconds model,
    and how many samples may be in flight (a round's calls that run together share the weight reads)."""

    shape: ModelShape
    hardware: Hardware
    count_weight_loading: bool
    seconds: SecondsModel
    in_flight: int | None = None  # samples the batch may have in flight (None: no limit)


def unsampled(
    cost: Cost,
    prompt_tokens: int,
    max_tokens: int,
    max_samples: int,
    verifier: str | None = None,
    calibration: VerifierCalibration | None = None,
    verifier_call: CallShape | None = None,
) -> Situation:
    """A prompt before any sample, as auto's plan builders take it: its costs and its verifier, half its
    max_tokens as the expected length, no evidence on its difficulty yet."""
    return Situation(
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        expected_tokens=max_tokens / 2,
        probe_samples=0,
        signature=0,
        mixture=[(1.0, 0.5)],
        wrong_shares=list(difficulty.DEFAULT_WRONG_SHARES),
        verifier=verifier,
        calibration=calibration,
        verifier_call=verifier_call,
        probe_scored=True,
        false_positive_penalty=0.0,
        cost_weight=0.0,
        shape=cost.shape,
        hardware=cost.hardware,
        count_weight_loading=cost.count_weight_loading,
        seconds_model=cost.seconds,
        caps=Caps(None, None, None),
        budget_scale=1.0,
        max_samples=max_samples,
        in_flight=cost.in_flight,
    )


def require_minimum(bases: Sequence[Situation], limits: Remaining, fairness: Fairness) -> None:
    """Refuse a batch whose budget cannot be expected to pay `min_samples` for every prompt (at half their
    max_tokens, the length the allocator expects before any sample), unless abstention is allowed. Worst
    cases (every sample at max_tokens) would refuse most budgets a best-of-N of actual lengths spends, and the
    probe is drawn in waves: what one wave does not spend of its reservation pays the next."""
    if fairness.allow_abstain:
        return
    floor = max(fairness.min_samples, 1)
    eflops = sum(_sized(replace(base, round_calls=len(bases)), floor)[0] for base in bases)
    tokens = sum(floor * max(base.max_tokens // 2, 1) for base in bases)
    if not limits.fits(eflops, tokens):
        raise BudgetExhausted(
            f"The batch budget cannot be expected to pay for {floor} sample(s) of each of the {len(bases)} "
            "problems; raise the budget, lower allocation.min_samples, or set allocation.allow_abstain.",
            param="budget",
        )


def share_cap(limits: Remaining, fairness: Fairness) -> Remaining | None:
    """One prompt's most, on each capped axis (None: no maximum share)."""
    if fairness.max_share is None:
        return None
    return limits.share(fairness.max_share)


def _sized(situation: Situation, samples: int) -> tuple[float, float, int]:
    """(expected eFLOPs, worst eFLOPs, worst tokens) of `samples` more samples of this prompt, plus the
    verifier's calls on them when the situation has a verifier."""
    s = situation
    call = CallShape(s.prompt_tokens, samples, s.expected_tokens, s.max_tokens)
    share = s.weight_share(samples)
    eflops = call_eflops(s.shape, s.hardware, call, s.count_weight_loading, share)
    worst = call_worst_eflops(s.shape, s.hardware, call, s.count_weight_loading, share)
    tokens = samples * s.max_tokens
    if s.verifier_call is not None:
        v = s.verifier_call
        eflops += samples * call_eflops(s.shape, s.hardware, v, s.count_weight_loading)  # charged on its own
        worst += samples * call_worst_eflops(s.shape, s.hardware, v, s.count_weight_loading)
        tokens += samples * v.max_tokens
    return eflops, worst, tokens


def rule_of(situation: Situation) -> Rule:
    """The vote a prompt's samples go to: judge-weighted with a verifier (its ceiling in the closed form),
    plurality without."""
    return "weighted" if situation.verifier is not None and situation.calibration is not None else "majority"


def vote_of(situation: Situation, rules: Rules) -> Vote:
    """The vote that picks a prompt's answer: its verifier's weighted vote when it has one, else the batch's
    `vote` (DeepConf's confidence vote or a plain majority). The allocation itself prices every prompt on the
    majority (or judge-weighted) ladder: the confidence vote has no closed form, and the steps it ranks are
    the same samples."""
    rule = rule_of(situation)
    return "weighted" if rule == "weighted" else rules.vote


def strategy_steps(key: str, situation: Situation, others: Mapping[str, Profile], now: float) -> list[Step]:
    """One whole run of each other strategy `auto` knows (tree searches, revision, DeepConf online), right
    after the probe: their measured profiles give accuracy by the probe's outcome at the profile's probe size
    only. Its reservation is HEADROOM times its predicted cost, which is also the run's own cap."""
    steps = []
    # a whole run's calls are charged as a request of its own (every call pays its weight reads), so it is
    # priced at unshared samples
    alone = replace(situation, round_calls=1)
    one = alone.sample_eflops()
    for name, profile in sorted(others.items()):
        if name == SAMPLES or profile.probe_size != situation.probe_samples:
            continue
        for plan in profile_plans(alone, profile):
            units = max(math.ceil(plan.eflops / one), 1) if one > 0 else 1
            worst_tokens = math.ceil(HEADROOM * units * situation.max_tokens)
            steps.append(
                Step(
                    key,
                    units,
                    now,
                    plan.accuracy,
                    plan.eflops,
                    HEADROOM * plan.eflops,
                    worst_tokens,
                    name,
                    plan.params,
                )
            )
    return steps


def next_step(
    key: str,
    situation: Situation,
    min_gain: float = 0.0,
    others: Mapping[str, Profile] | None = None,
    samples: bool = True,
    curve: Curve | None = None,
) -> Step | None:
    """This prompt's best next step: more samples on auto's best-of-N ladder (when `samples`), or one whole run
    of another strategy profiled in `others`. Of the steps that gain at least `min_gain` per added sample
    (a whole run counts its cost in samples), the one of highest predicted gain per expected eFLOP (one bigger
    call can beat two small ones when every call reads the weights once per step); when none does, the
    smallest (it says by how little). None: no step at all.
    `situation.probe_samples` is every sample drawn so far; the ladder's plan at that count is 'now'. With a
    `curve` (the measured accuracy of the prompt's own vote by sample count), the ladder's accuracies are the
    curve's, and it offers only the sample counts the curve covers."""
    k = situation.probe_samples
    rule = rule_of(situation)
    ladder: list[Plan] = [plan for plan in best_of_n_plans(situation) if plan.params.get("selection") == rule]
    now = next((plan.accuracy for plan in ladder if plan.samples == k), 0.0)
    rungs = [(plan, plan.accuracy) for plan in ladder]
    measured_now = curve(k) if curve is not None else None
    if curve is not None and measured_now is not None:
        now = measured_now
        rungs = [(plan, accuracy) for plan in ladder if (accuracy := curve(plan.samples)) is not None]
    steps = [
        Step(key, plan.samples - k, now, accuracy, plan.eflops, plan.worst_eflops, plan.worst_tokens)
        for plan, accuracy in rungs
        if samples and plan.samples > k
    ]
    # a whole run predicted no better than the vote it would replace is never a step
    steps += [step for step in strategy_steps(key, situation, others or {}, now) if step.gain > 0]
    if not steps:
        return None
    worth = [step for step in steps if step.gain / step.samples >= min_gain]
    if not worth:
        return min(steps, key=lambda step: step.samples)
    return max(worth, key=lambda step: (step.value, -step.samples))


def shrink(step: Step, situation: Situation, samples: int) -> Step:
    """The same step with fewer samples; its gain taken as proportional (between two rungs of the ladder)."""
    eflops, worst, tokens = _sized(situation, samples)
    after = step.accuracy_now + step.gain * samples / step.samples
    return replace(
        step, samples=samples, accuracy_after=after, eflops=eflops, worst_eflops=worst, worst_tokens=tokens
    )


def _largest_fitting(step: Step, situation: Situation, fits: Callable[[Step], bool]) -> Step | None:
    """The same step with as many samples as fit; None when none does (a whole run cannot shrink)."""
    if step.whole:
        return None
    for samples in range(step.samples - 1, 0, -1):
        smaller = shrink(step, situation, samples)
        if fits(smaller):
            return smaller
    return None


def plan_round(
    prompts: Sequence[tuple[Ledger, Situation]],
    left: Remaining,
    limits: Remaining,
    rules: Rules,
    fairness: Fairness,
    others: Mapping[str, Profile] | None = None,
    curves: Mapping[str, Curve] | None = None,
) -> list[Step]:
    """This round's steps, best predicted gain per eFLOP first, within `round_share` of what is `left` (at
    least one step when any fits), each prompt within its maximum share of the batch's `limits`. Prompts
    that stop are marked on their ledger (settled, hopeless, capped). `others`: the profiles of the other
    strategies a prompt may run whole (those `rules.strategies` allows); `curves`: the measured accuracy of
    a prompt's vote by sample count, where known (see `vote_curves`)."""
    curves = curves or {}
    allowed = rules.strategies
    samples_ok = allowed is None or SAMPLES in allowed
    runs = {name: profile for name, profile in (others or {}).items() if allowed is None or name in allowed}
    cap = share_cap(limits, fairness)

    def share_left(ledger: Ledger) -> Remaining | None:
        """What is left of this prompt's maximum share (None: no maximum)."""
        if cap is None:
            return None
        return Remaining(
            None if cap.tokens is None else cap.tokens - ledger.tokens,
            None if cap.eflops is None else cap.eflops - ledger.eflops,
        )

    candidates: list[tuple[Step, Situation, Ledger]] = []
    for ledger, situation in prompts:
        if ledger.status != "active":
            continue
        ledger.p = situation.p_mean
        if ledger.samples >= rules.max_samples:
            ledger.stop("capped", f"reached allocation.max_samples ({rules.max_samples})")
            continue
        curve = curves.get(ledger.key)
        step = next_step(ledger.key, situation, rules.min_gain, runs, samples_ok, curve)
        if step is None:
            ledger.stop(
                "capped",
                "no next step: no larger sample plan within the limits (or allocation.strategies) and no other "
                "strategy's run predicted to do better than its vote",
            )
            continue
        ledger.predicted_accuracy = step.accuracy_now
        if not step.whole and ledger.samples + step.samples > rules.max_samples:
            step = shrink(step, situation, rules.max_samples - ledger.samples)
        if step.gain / step.samples < rules.min_gain:
            settled = step.accuracy_now >= rules.settled_at
            ledger.stop(
                "settled" if settled else "hopeless",
                f"{'settled' if settled else 'hopeless'}: at estimated p = {situation.p_mean:.2f} its vote of "
                f"{ledger.samples} is predicted right with probability {step.accuracy_now:.3f}, and "
                f"{step.samples} more samples would add only {step.gain:.4f} (below allocation.min_gain = "
                f"{rules.min_gain} per sample)",
            )
            continue
        share = share_left(ledger)
        if share is not None:
            if step.whole and not share.pays(step):  # a whole run cannot shrink: more samples instead
                fallback = next_step(ledger.key, situation, rules.min_gain, None, samples_ok, curve)
                if fallback is None or fallback.gain / fallback.samples < rules.min_gain:
                    ledger.stop(
                        "capped", f"reached its maximum share ({fairness.max_share}) of the batch budget"
                    )
                    continue
                step = fallback
            if not share.pays(step):
                smaller = _largest_fitting(step, situation, share.pays)
                if smaller is None:
                    ledger.stop(
                        "capped", f"reached its maximum share ({fairness.max_share}) of the batch budget"
                    )
                    continue
                step = smaller
        candidates.append((step, situation, ledger))
    candidates.sort(key=lambda item: (-item[0].value, item[0].key))
    # The calls a round makes share the weight reads, so each is priced as one of the round's calls; when
    # fewer are chosen than were priced, every call's share is smaller: price again at the smaller round.
    calls = sum(not step.whole for step, _, _ in candidates)
    while True:
        chosen = _choose(_at_round(candidates, calls), left, rules, share_left)
        made = sum(not step.whole for step in chosen)
        if made >= calls:
            return chosen
        calls = made


def _at_round(
    candidates: Sequence[tuple[Step, Situation, Ledger]], calls: int
) -> list[tuple[Step, Situation, Ledger]]:
    """The candidates' sample steps priced as calls of a round of `calls` (a whole run is priced alone)."""
    priced = []
    for step, situation, ledger in candidates:
        if not step.whole:
            situation = replace(situation, round_calls=max(calls, 1))
            eflops, worst, tokens = _sized(situation, step.samples)
            step = replace(step, eflops=eflops, worst_eflops=worst, worst_tokens=tokens)
        priced.append((step, situation, ledger))
    return priced


def _choose(
    candidates: Sequence[tuple[Step, Situation, Ledger]],
    left: Remaining,
    rules: Rules,
    share_left: Callable[[Ledger], Remaining | None],
) -> list[Step]:
    """Steps best value first while their worst cases fit what is `left` and what is left of their prompt's
    maximum share (a sample step that does not fit gets fewer samples), within `round_share` of `left` after
    the first."""
    allowance = left.share(rules.round_share)
    room = Remaining(left.tokens, left.eflops)
    chosen: list[Step] = []
    for step, situation, ledger in candidates:
        limit = share_left(ledger)
        if limit is not None and not step.whole and not limit.pays(step):
            within = _largest_fitting(step, situation, limit.pays)
            if within is None:
                continue
            step = within
        if not room.pays(step):
            smaller = _largest_fitting(step, situation, room.pays)
            if smaller is None:
                continue
            step = smaller
        if chosen and not allowance.pays(step):
            continue
        chosen.append(step)
        room.take(step.worst_eflops, step.worst_tokens)
        allowance.take(step.worst_eflops, step.worst_tokens)
    return chosen


def close_unfunded(ledgers: Sequence[Ledger], reason: str) -> None:
    """At the end, prompts still active stopped because the batch ended (budget, seconds, rounds), not by
    their own estimate."""
    for ledger in ledgers:
        if ledger.status == "active":
            ledger.stop("budget", reason)


# -- the loop ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """One prompt as the allocator sees it: its costs and verifier (in `base`) and its calibration."""

    key: str
    base: Situation  # prompt and sample lengths, cost model, verifier; no samples yet
    calibration: VerifierCalibration | None = None


@dataclass
class Drawn:
    """What one draw of a prompt brought: its new candidates and what they cost."""

    candidates: list[Candidate]
    eflops: float
    tokens: int
    answer: Candidate | None = None  # a whole strategy run's own answer


Draw = Callable[[list[tuple[str, int]]], Awaitable[dict[str, Drawn]]]
RunWhole = Callable[[Step], Awaitable[Drawn]]
Progress = Callable[[str, int, Sequence[Ledger]], None]


def situation_of(
    prompt: Prompt, candidates: Sequence[Candidate], profile: Profile | None
) -> tuple[Situation, difficulty.Difficulty]:
    """auto's view of the prompt after these samples: difficulty.estimate on all of them (the measured
    profile applies only while they are exactly the profile's probe), their mean length as the expected one."""
    estimate = difficulty.estimate(candidates, profile, prompt.calibration)
    base = prompt.base
    mean = sum(c.tokens for c in candidates) / len(candidates) if candidates else 0.0
    measured = profile is not None and profile.probe_size == len(candidates)
    shares = estimate.wrong_shares if measured else observed_wrong_shares(candidates, estimate.wrong_shares)
    situation = replace(
        base,
        probe_samples=len(candidates),
        signature=estimate.signature,
        mixture=estimate.mixture,
        wrong_shares=shares,
        expected_tokens=mean or base.expected_tokens,
        probe_scored=True,
        profiles={"best_of_n": profile} if measured and profile is not None else {},
    )
    return situation, estimate


def observed_wrong_shares(
    candidates: Sequence[Candidate], prior: Sequence[float], weight: float = 2.0
) -> list[float]:
    """The spread of the wrong answers, from the samples themselves once there are more than a probe's:
    the shares of the two most common answers other than the modal one among the non-modal samples (the
    PassUntil view: the modal answer is the pass), shrunk towards the prior shares with `weight` samples.
    Without it, the prior's one dominant wrong answer (half of all wrong samples) would make every prompt
    whose wrong answers scatter look as if more samples could not help."""
    counts = Counter(c.answer for c in candidates if c.answer is not None)
    ranked = [count for _, count in counts.most_common()]
    others = len(candidates) - (ranked[0] if ranked else 0)
    if others <= 0:
        return list(prior)
    observed = ranked[1:3] + [0] * (3 - len(ranked[1:3]) - 1)
    return [
        (count + weight * share) / (others + weight) for count, share in zip(observed, prior, strict=False)
    ]


def agreed(ledger: Ledger, candidates: Sequence[Candidate], vote: Vote, consensus: float | None) -> bool:
    """DeepConf's consensus stop, for every vote: once the leading answer holds `consensus` of the prompt's
    vote (weighted by confidence or verifier score, or counted), the prompt is settled and stops."""
    if consensus is None or len(candidates) < 2:
        return False
    weights = answer_weights(list(candidates), "majority" if vote == "majority" else "weighted")
    total = sum(weights.values())
    if total <= 0:
        return False
    share = max(weights.values()) / total
    if share < consensus:
        return False
    ledger.stop(
        "settled",
        f"settled: its leading answer holds {share:.2f} of its {vote} vote over {len(candidates)} samples "
        f"(allocation.consensus = {consensus})",
    )
    return True


def confidence_table(profile: Profile, probe: Sequence[Candidate]) -> str:
    """The confidence-vote table that prices this probe: the one for the level its most confident sample
    reaches on the profile's `confidence_bins` (`confidence@<level>`), else the one by agreement alone. On the
    fit split the probe's most confident sample sorted prompts three ways that agreement alone could not: a
    high one is mostly right already (settled), a middling one mostly confidently wrong (hopeless), a low one
    has found no confident answer yet, and more samples pay most there."""
    scores = [c.score for c in probe if c.score is not None]
    if not profile.confidence_bins or not scores:
        return CONFIDENCE_TABLE
    return level_table(profile.confidence_bins, max(scores))


def level_table(bins: Sequence[float], top: float) -> str:
    """The name of the confidence-vote table for a probe whose most confident sample is `top`: its level is
    how many of the `bins` thresholds it passes (the benchmark fits the tables under the same names)."""
    return f"{CONFIDENCE_TABLE}@{bisect.bisect_right(bins, top)}"


def vote_curves(
    prompts: Sequence[Prompt], pools: Mapping[str, Sequence[Candidate]], profile: Profile | None, rules: Rules
) -> dict[str, Curve]:
    """For every prompt answered by the confidence vote whose probe is the profile's probe size, the measured
    accuracy of that vote by sample count for prompts of its probe's outcome (its agreement and, where the
    profile has them, the level of its most confident sample: `confidence_table`), when the profile has that
    table (`loadtests/batch_allocation.py --write-profile` fits them). The plurality closed form prices the
    majority vote; the confidence vote has none, and on a small model the two disagree on where samples help:
    probes that agree little gain most from the confidence vote."""
    if profile is None:
        return {}
    curves: dict[str, Curve] = {}
    for prompt in prompts:
        pool = pools[prompt.key]
        if vote_of(prompt.base, rules) != "confidence" or len(pool) != profile.probe_size:
            continue
        agreement = difficulty.signature(pool)
        key = confidence_table(profile, pool)
        if profile.measured(key, agreement, profile.probe_size) is None:
            key = CONFIDENCE_TABLE  # a cell the fit split saw too rarely to measure
        if profile.measured(key, agreement, profile.probe_size) is None:
            continue

        def curve(
            samples: int, agreement: int = agreement, table: Profile = profile, key: str = key
        ) -> float | None:
            return table.measured(key, agreement, samples)

        curves[prompt.key] = curve
    return curves


def _charge(ledgers: dict[str, Ledger], pools: dict[str, list[Candidate]], drawn: dict[str, Drawn]) -> None:
    for key, got in drawn.items():
        pools[key].extend(got.candidates)
        ledger = ledgers[key]
        ledger.samples += len(got.candidates)
        ledger.eflops += got.eflops
        ledger.tokens += got.tokens


async def take_steps(
    steps: Sequence[Step],
    draw: Draw,
    run_whole: RunWhole | None,
    ledgers: dict[str, Ledger],
    pools: dict[str, list[Candidate]],
) -> None:
    """One round's steps at once: the sample steps in one `draw`, every whole run beside them. A prompt that
    ran a whole strategy is answered by it and stops."""
    samples = [step for step in steps if not step.whole]
    whole = [step for step in steps if step.whole]

    async def sampled() -> dict[str, Drawn]:
        return await draw([(step.key, step.samples) for step in samples]) if samples else {}

    async def ran() -> dict[str, Drawn]:
        if not whole or run_whole is None:
            return {}
        results = await gather_or_cancel(*(run_whole(step) for step in whole))
        return {step.key: got for step, got in zip(whole, results, strict=True)}

    drawn, runs = await gather_or_cancel(sampled(), ran())
    _charge(ledgers, pools, drawn)
    _charge(ledgers, pools, runs)
    for step in whole:
        ledger, got = ledgers[step.key], runs[step.key]
        if got.answer is None and not got.candidates:
            ledger.stop("budget", f"its run of {step.strategy} brought nothing (refused or out of budget)")
            continue
        ledger.answer = got.answer
        ledger.predicted_accuracy = step.accuracy_after
        ledger.stop(
            "answered",
            f"answered by one run of {step.strategy} {step.params}: predicted right with probability "
            f"{step.accuracy_after:.3f}, against {step.accuracy_now:.3f} for the vote of its samples so far, at "
            f"the best predicted gain per eFLOP of its next steps",
        )


async def allocate(
    prompts: Sequence[Prompt],
    draw: Draw,
    left: Callable[[], Remaining],
    limits: Remaining,
    rules: Rules,
    fairness: Fairness,
    profile: Profile | None,
    expired: Callable[[], bool] = lambda: False,
    progress: Progress | None = None,
    others: Mapping[str, Profile] | None = None,
    run_whole: RunWhole | None = None,
) -> tuple[list[Ledger], dict[str, list[Candidate]]]:
    """Probe every prompt, then give out the rest round by round (see the module's docstring). `draw` runs
    the sample steps of one round at once and returns each prompt's new candidates; `run_whole` runs one
    whole run of another strategy (profiled in `others`; without `run_whole` only samples are offered);
    `left` is what the batch's tracker has left. Returns each prompt's ledger and candidates."""
    ledgers = {p.key: Ledger(p.key) for p in prompts}
    pools: dict[str, list[Candidate]] = {p.key: [] for p in prompts}

    def worst(index: int, samples: int, calls: int) -> tuple[float, int]:
        _, eflops, tokens = _sized(replace(prompts[index].base, round_calls=calls), samples)
        return eflops, tokens

    require_minimum([prompt.base for prompt in prompts], limits, fairness)
    # The probe, in waves: all at once when every probe's worst case fits; else the minimum for as many as
    # fit (cheapest first), then again with what the finished calls did not spend.
    waves = Fairness(fairness.min_samples, fairness.max_share, allow_abstain=True)
    unprobed = list(range(len(prompts)))
    refused: dict[int, int] = {}
    while unprobed:
        if expired():
            break

        # the wave's calls share the weight reads: priced again at the wave's size until it is the one priced
        calls = len(unprobed)
        while True:

            def worst_of(
                index: int, samples: int, order: list[int] = unprobed, calls: int = calls
            ) -> tuple[float, int]:
                return worst(order[index], samples, calls)

            sizes = probe_sizes(len(unprobed), worst_of, left(), rules, waves, share_cap(limits, fairness))
            made = sum(size > 0 for size in sizes)
            if made >= calls or made == 0:
                break
            calls = made
        wave = [(prompts[i].key, size) for i, size in zip(unprobed, sizes, strict=True) if size > 0]
        if not wave:
            break
        _charge(ledgers, pools, await draw(wave))
        for key, size in wave:
            ledgers[key].steps.append({"round": 0, "samples": size, "why": "probe"})
        # a probe that brought nothing (refused: quota, admission) is tried again, twice at most
        again = []
        for i, size in zip(unprobed, sizes, strict=True):
            if size > 0 and not pools[prompts[i].key]:
                refused[i] = refused.get(i, 0) + 1
                if refused[i] <= 2:
                    again.append(i)
        unprobed = [i for i, size in zip(unprobed, sizes, strict=True) if size == 0] + again
    for index in unprobed:
        ledgers[prompts[index].key].stop(
            "unfunded", "abstained: the batch budget ran out before it could pay this problem's first sample"
        )
    if progress is not None:
        progress("probe", 0, list(ledgers.values()))
    curves = vote_curves(prompts, pools, profile, rules)
    ended = f"reached allocation.max_rounds ({rules.max_rounds}) before its next sample"
    for round_index in range(1, rules.max_rounds + 1):
        if expired():
            ended = "the batch's seconds ran out before its next sample"
            break
        views = []
        for prompt in prompts:
            ledger = ledgers[prompt.key]
            if ledger.status == "active":
                if not pools[prompt.key]:  # drawn, but every sample was refused (quota): nothing to go on
                    ledger.stop("budget", "its probe brought no sample")
                    continue
                if agreed(ledger, pools[prompt.key], vote_of(prompt.base, rules), rules.consensus):
                    continue
                views.append((ledger, situation_of(prompt, pools[prompt.key], profile)[0]))
        # the round's calls start together: each is priced with its share of the weight reads
        views = [(ledger, replace(situation, round_calls=len(views))) for ledger, situation in views]
        steps = plan_round(views, left(), limits, rules, fairness, others if run_whole else None, curves)
        if not steps:
            ended = "the batch budget left could not pay for its next sample"
            break
        for step in steps:
            ledgers[step.key].steps.append({"round": round_index, **step.describe()})
        await take_steps(steps, draw, run_whole, ledgers, pools)
        if progress is not None:
            progress("round", round_index, list(ledgers.values()))
    for prompt in prompts:  # final estimates for the report
        ledger = ledgers[prompt.key]
        if pools[prompt.key] and ledger.status != "answered":
            situation, estimate = situation_of(prompt, pools[prompt.key], profile)
            ledger.p = estimate.p
            rule = rule_of(situation)
            ladder = [p for p in best_of_n_plans(situation) if p.params.get("selection") == rule]
            ledger.predicted_accuracy = next(
                (p.accuracy for p in ladder if p.samples == len(pools[prompt.key])), ledger.predicted_accuracy
            )
            measured = curves[prompt.key](len(pools[prompt.key])) if prompt.key in curves else None
            if measured is not None:
                ledger.predicted_accuracy = measured
    close_unfunded(list(ledgers.values()), ended)
    return list(ledgers.values()), pools

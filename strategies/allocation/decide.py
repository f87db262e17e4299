"""The decision rule: the plan of highest expected utility that fits the budget.

    utility(plan) = P(correct) - penalty * P(answered and wrong)      (abstaining is worth 0)
    score(plan)   = utility - cost_weight * predicted eFLOPs / budget

The cost term is the saturation rule of papers.md section 6 in budget units: a plan that costs more must buy at
least `cost_weight` utility per whole budget it spends, so hopeless and easy prompts stop early, while a
bigger budget never lowers the chosen plan's utility (the feasible set grows and the cost weight shrinks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from strategies.allocation.costs import CallShape, call_eflops, call_worst_eflops
from strategies.allocation.difficulty import DEFAULT_WRONG_SHARES, population
from strategies.allocation.plans import (
    Caps,
    Plan,
    Situation,
    abstain_plan,
    best_of_n_plans,
    candidate_plans,
    fits,
)
from strategies.allocation.profiles import Profile


@dataclass
class Decision:
    chosen: Plan
    runners_up: list[Plan]
    considered: int
    feasible: int
    reason: str


def score_plans(situation: Situation, plans: list[Plan]) -> None:
    scale = situation.budget_scale if situation.budget_scale > 0 else 1.0
    for plan in plans:
        plan.utility = plan.accuracy - situation.false_positive_penalty * plan.answered_wrong
        plan.score = plan.utility - situation.cost_weight * plan.eflops / scale


def decide(situation: Situation, plans: list[Plan]) -> Decision:
    score_plans(situation, plans)
    feasible = [plan for plan in plans if fits(situation, plan)]
    ranked = sorted(feasible, key=lambda plan: (-plan.score, plan.eflops, plan.strategy))
    if not ranked:  # caps already overdrawn (e.g. after a probe that did not fit): only abstaining is left
        ranked = [abstain_plan(situation)]
        score_plans(situation, ranked)
    chosen = ranked[0]
    return Decision(chosen, ranked[1:4], len(plans), len(feasible), reason(situation, chosen, ranked))


def reason(situation: Situation, chosen: Plan, ranked: list[Plan]) -> str:
    p = situation.p_mean
    if chosen.strategy == "abstain":
        best_answer = max(
            (plan for plan in ranked if plan.strategy != "abstain"), key=lambda x: x.utility, default=None
        )
        if best_answer is None:
            return "Abstained: no plan that answers fits the budget left."
        return (
            f"Abstained: at estimated p = {p:.2f} the best plan ({best_answer.strategy} "
            f"{best_answer.params}) has expected utility {best_answer.utility:.3f} under the false-positive "
            f"penalty {situation.false_positive_penalty}, worse than not answering."
        )
    bigger = [plan for plan in ranked if plan.eflops > chosen.eflops and plan.strategy != "abstain"]
    best_bigger = max(bigger, key=lambda plan: plan.utility, default=None)
    if best_bigger is None:
        tail = "no costlier plan fits the budget"
    elif best_bigger.utility <= chosen.utility + 1e-9:
        tail = "costlier plans predict no gain (verifier ceiling or saturation)"
    else:
        tail = (
            f"the best costlier plan gains only {best_bigger.utility - chosen.utility:.3f} for "
            f"{best_bigger.eflops / max(chosen.eflops, situation.sample_eflops()):.1f}x the eFLOPs"
        )
    return (
        f"Chose {chosen.strategy} {chosen.params} at estimated p = {p:.2f}: predicted accuracy "
        f"{chosen.accuracy:.2f} ({chosen.basis}); {tail}."
    )


@dataclass
class ProbeChoice:
    """Whether to probe before choosing: the best plan without a probe against the expected best after one."""

    probe: bool
    blind: Situation  # the prompt as the fit set at large, before any sample
    without_probe: Decision  # best-of-N for it, in one call
    score_without: float
    expected_score_with: float
    reason: str


def value_of_probe(
    base: Situation,
    profile: Profile,
    probe_samples: int,
    strategies: set[str],
    allowed: set[str] | None,
) -> ProbeChoice:
    """A probe pays only when what it reveals changes the plan by more than it costs. It can cost a lot: when
    every call reads the weights once per step (a small batch), a probe and then a second call cost more than
    one bigger call, and an outcome that says little about p changes nothing. So: the expected score of the
    best plan after each probe outcome the profile measured (value of information), its cost included, against
    the best single best-of-N call for a prompt of the fit set at large."""
    blind_difficulty = population(profile)
    blind = replace(
        base,
        probe_samples=0,
        signature=blind_difficulty.signature,
        mixture=blind_difficulty.mixture,
        wrong_shares=blind_difficulty.wrong_shares,
    )
    without = decide(blind, [abstain_plan(blind), *best_of_n_plans(blind)])
    s = base
    probe_call = CallShape(s.prompt_tokens, probe_samples, s.expected_tokens, s.max_tokens)
    probe_eflops = call_eflops(s.shape, s.hardware, probe_call, s.count_weight_loading)
    worst = call_worst_eflops(s.shape, s.hardware, probe_call, s.count_weight_loading)
    caps = s.caps
    after_probe = Caps(
        None if caps.tokens is None else caps.tokens - probe_samples * s.max_tokens,
        None if caps.eflops is None else caps.eflops - worst,
        None if caps.seconds is None else caps.seconds - s.seconds_model.predict(probe_call),
    )
    total = sum(item.weight for item in profile.bins) or 1.0
    expected = 0.0
    probe_fits = all(
        cap is None or cap >= 0 for cap in (after_probe.tokens, after_probe.eflops, after_probe.seconds)
    )
    for item in profile.bins if probe_fits else ():
        seen = replace(
            s,
            probe_samples=probe_samples,
            signature=item.signature,
            mixture=list(item.p_mixture),
            wrong_shares=list(item.wrong_shares) or list(DEFAULT_WRONG_SHARES),
            caps=after_probe,
        )
        expected += (
            item.weight / total * decide(seen, candidate_plans(seen, strategies, allowed)).chosen.score
        )
    scale = s.budget_scale if s.budget_scale > 0 else 1.0
    expected -= s.cost_weight * probe_eflops / scale
    score_without = without.chosen.score
    probe = probe_fits and expected >= score_without
    if probe:
        text = (
            f"Probed: the plans a {probe_samples}-sample probe leads to score {expected:.3f} in expectation, its "
            f"cost included, against {score_without:.3f} for the best single call without one."
        )
    elif not probe_fits:
        text = f"Skipped the probe: a {probe_samples}-sample probe does not fit the budget."
    else:
        text = (
            f"Skipped the probe: one call without it scores {score_without:.3f}, while probing first "
            f"(a {probe_samples}-sample call, then the plan its outcome calls for) scores {expected:.3f} in "
            "expectation."
        )
    return ProbeChoice(probe, blind, without, score_without, expected, text)

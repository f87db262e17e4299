"""The decision rule: the plan of highest expected utility that fits the budget.

    utility(plan) = P(correct) - penalty * P(answered and wrong)      (abstaining is worth 0)
    score(plan)   = utility - cost_weight * predicted eFLOPs / budget

The cost term is the saturation rule of papers.md section 6 in budget units: a plan that costs more must buy at
least `cost_weight` utility per whole budget it spends, so hopeless and easy prompts stop early, while a
bigger budget never lowers the chosen plan's utility (the feasible set grows and the cost weight shrinks).
"""

from __future__ import annotations

from dataclasses import dataclass

from strategies.allocation.plans import Plan, Situation, fits


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
    chosen = ranked[0]  # the abstain plan always fits
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

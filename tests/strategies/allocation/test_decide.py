"""The decision rule on synthetic situations: where the allocator spends, where it stops, when it abstains."""

from dataclasses import replace

import pytest

from service.cost import Hardware, ModelShape
from strategies.allocation import formulas
from strategies.allocation.costs import CallShape, SecondsModel
from strategies.allocation.decide import decide
from strategies.allocation.plans import Caps, Plan, Situation, best_of_n_plans, candidate_plans
from strategies.allocation.store import VerifierCalibration

SHAPE = ModelShape(134_515_008, 30, 9, 3, 64)
HARDWARE = Hardware("cpu", 3.8e11, 4.1e10)  # what this project's CPU measured: I ~ 9


def situation(
    p: float,
    *,
    eflops_cap: float | None = None,
    verifier: tuple[float, float] | None = None,
    penalty: float = 0.0,
    cost_weight: float = 0.1,
) -> Situation:
    calibration = (
        VerifierCalibration("judge", "default", verifier[0], verifier[1], 50, 50, 0.5, "measured")
        if verifier
        else None
    )
    base = Situation(
        prompt_tokens=40,
        max_tokens=32,
        expected_tokens=12.0,
        probe_samples=4,
        signature=2,
        mixture=[(1.0, p)],
        wrong_shares=[0.5, 0.2],
        verifier="judge" if verifier else None,
        calibration=calibration,
        verifier_call=CallShape(110, 1, 1.0, 1) if verifier else None,
        probe_scored=verifier is not None,
        false_positive_penalty=penalty,
        cost_weight=cost_weight,
        shape=SHAPE,
        hardware=HARDWARE,
        count_weight_loading=True,
        seconds_model=SecondsModel(),
        caps=Caps(None, eflops_cap, None),
        budget_scale=0.0,
        max_samples=64,
    )
    base.budget_scale = eflops_cap or base.sample_eflops() * 64
    return base


def choose(s: Situation, only: str | None = None) -> Plan:
    plans = candidate_plans(s, {"best_of_n", "none"}, None)
    if only is not None:
        plans = [plan for plan in plans if plan.strategy == "abstain" or plan.params.get("selection") == only]
    return decide(s, plans).chosen


def test_easy_prompts_get_few_samples_and_medium_ones_more() -> None:
    easy = choose(situation(0.95))
    medium = choose(situation(0.45))
    assert easy.strategy == "best_of_n" and medium.strategy == "best_of_n"
    assert easy.samples <= 8 < medium.samples


def test_hopeless_prompts_get_little() -> None:
    assert choose(situation(0.01)).samples == 4  # the probe's samples and nothing more


def test_a_leaky_verifier_lowers_n() -> None:
    sound = choose(situation(0.3, verifier=(0.95, 0.95), penalty=0.5), only="max")
    leaky = choose(situation(0.3, verifier=(0.95, 0.55), penalty=0.5), only="max")
    assert sound.strategy == leaky.strategy == "best_of_n"
    assert leaky.samples < sound.samples


def test_the_ceiling_bounds_resampling() -> None:
    s = situation(0.3, verifier=(0.9, 0.8))
    top = max(plan.accuracy for plan in best_of_n_plans(s) if plan.params["selection"] == "max")
    assert top <= formulas.ceiling(0.3, 0.9, 0.8) + 1e-9


def test_a_penalty_leads_to_abstention() -> None:
    assert choose(situation(0.15)).strategy == "best_of_n"
    assert choose(situation(0.15, penalty=2.0)).strategy == "abstain"


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8])
def test_a_bigger_budget_never_lowers_predicted_accuracy(p: float) -> None:
    one = situation(p).sample_eflops()
    accuracies = []
    for units in (4, 6, 10, 20, 40, 80):
        s = situation(p, eflops_cap=one * units)
        accuracies.append(choose(s).accuracy)
    assert accuracies == sorted(accuracies)


def test_every_chosen_plan_fits_the_cap() -> None:
    one = situation(0.4).sample_eflops()
    for units in (1, 3, 9, 27):
        s = situation(0.4, eflops_cap=one * units * 2)
        chosen = choose(s)
        assert chosen.worst_eflops <= one * units * 2


def test_uncertain_difficulty_is_a_mixture() -> None:
    s = replace(situation(0.5), mixture=[(0.5, 0.05), (0.5, 0.95)])
    plan = next(p for p in best_of_n_plans(s) if p.samples == 4)
    low = formulas.plurality_win(4, 0.05, [0.95 * 0.5, 0.95 * 0.2])
    high = formulas.plurality_win(4, 0.95, [0.05 * 0.5, 0.05 * 0.2])
    assert plan.accuracy == pytest.approx((low + high) / 2)

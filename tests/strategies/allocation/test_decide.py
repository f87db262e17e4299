"""The decision rule on synthetic situations: where the allocator spends, where it stops, when it abstains."""

from dataclasses import replace

import pytest

from service.runtime.cost import Hardware, ModelShape
from service.store.allocation import VerifierCalibration
from strategies.allocation import formulas
from strategies.allocation.costs import CallShape, SecondsModel, call_worst_eflops
from strategies.allocation.decide import decide, value_of_probe
from strategies.allocation.plans import Caps, Plan, Situation, best_of_n_plans, candidate_plans
from strategies.allocation.profiles import POPULATION, Profile, ProfileBin

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


def fit_set(*bins: tuple[int, float, float]) -> Profile:
    """A best-of-N profile whose probe outcomes (signature, weight, p) each hold prompts of one p."""
    return Profile(
        "best_of_n",
        4,
        "synthetic",
        tuple(ProfileBin(m, weight, ((1.0, p),), (0.5, 0.2)) for m, weight, p in bins),
        (),
    )


def test_a_probe_that_tells_easy_from_medium_prompts_is_worth_its_cost() -> None:
    # Half the prompts are easy (4/4 agree), half medium (2/4): after a probe, easy ones stop and medium ones
    # get more samples; without one, every prompt gets the same N. Per-token costs: no call overhead.
    base = replace(situation(0.7, cost_weight=0.3), count_weight_loading=False)
    choice = value_of_probe(base, fit_set((4, 0.5, 0.97), (2, 0.5, 0.4)), 4, {"best_of_n"}, None)
    assert choice.probe
    assert choice.expected_score_with > choice.score_without


def test_an_uninformative_probe_is_skipped_when_a_second_call_costs_its_weight_reads() -> None:
    # Every probe outcome means the same p, and each call reads the weights once per step: probing first
    # only leaves less of the cap for samples than one call of all of them.
    cap = call_worst_eflops(SHAPE, HARDWARE, CallShape(40, 16, 12.0, 32), True)
    base = situation(0.45, eflops_cap=cap, cost_weight=0.0)
    choice = value_of_probe(
        base, fit_set((1, 0.3, 0.45), (2, 0.4, 0.45), (3, 0.3, 0.45)), 4, {"best_of_n"}, None
    )
    assert not choice.probe
    assert choice.without_probe.chosen.samples == 16
    assert "Skipped the probe" in choice.reason


def test_without_a_probe_measured_accuracy_is_the_fit_sets_average() -> None:
    bins = (
        ProfileBin(1, 0.75, ((1.0, 0.1),), (0.5,), {"majority": {4: 0.2, 8: 0.3}}),
        ProfileBin(4, 0.25, ((1.0, 0.9),), (0.5,), {"majority": {4: 1.0, 8: 1.0}}),
    )
    profile = Profile("best_of_n", 4, "synthetic", bins, ())
    assert profile.measured("majority", POPULATION, 4) == pytest.approx(0.75 * 0.2 + 0.25 * 1.0)
    assert profile.measured("majority", POPULATION, 16) is None  # not measured in every bin

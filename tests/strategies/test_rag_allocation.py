"""The RAG allocation model: anchored on its measurements (it ranks the measured grid in the measured order and,
with no context budget, picks the configuration of highest measured accuracy); the fitted form can express a
peak at small k; the choice respects the context budget."""

from __future__ import annotations

from strategies.rag_allocation import (
    FIT_FILE,
    AllocationModel,
    CostShape,
    Measurement,
    Theta,
    choose,
    context_cost,
    fit,
)

# The shape this model measured (issue 12): accuracy peaks at small k and falls for long contexts.
PEAKED = [
    Measurement(Theta(0, 0, 0), 0.00, 70),
    Measurement(Theta(1, 0, 0), 0.20, 120),
    Measurement(Theta(3, 0, 0), 0.15, 220),
    Measurement(Theta(5, 0, 0), 0.08, 320),
    Measurement(Theta(10, 0, 0), 0.03, 560),
    Measurement(Theta(3, 2, 0), 0.12, 700),
    Measurement(Theta(3, 0, 1), 0.30, 900),
    Measurement(Theta(3, 0, 2), 0.25, 1500),
    Measurement(Theta(3, 0, 3), 0.22, 2100),
]


def ranking(model: AllocationModel, grid: list[Measurement]) -> list[Theta]:
    return [row.theta for row in sorted(grid, key=lambda row: -model.predict(row.theta))]


def test_committed_fit_ranks_the_measured_configurations_in_the_measured_order() -> None:
    model = AllocationModel.load(FIT_FILE)
    assert model is not None and len(model.measured) >= 6, "loadtests/rag.py writes the measured grid"
    measured = sorted(model.measured, key=lambda row: -row.accuracy)
    assert [model.predict(row.theta) for row in measured] == [row.accuracy for row in measured]
    best = measured[0]
    assert choose(model, None) == best.theta  # no budget: the highest MEASURED accuracy
    assert model.fitted(best.theta) > 0.0


def test_with_no_budget_the_best_measured_configuration_wins_over_a_larger_one() -> None:
    model = fit(PEAKED, CostShape())
    assert choose(model, None) == Theta(3, 0, 1)
    # The old failure: k=10, no demonstrations, 3 rounds (never measured) predicted above the measured best.
    assert choose(model, None) != Theta(10, 0, 3)
    assert ranking(model, PEAKED)[:3] == [Theta(3, 0, 1), Theta(3, 0, 2), Theta(3, 0, 3)]


def test_fitted_form_has_the_peak_at_small_k() -> None:
    model = fit(PEAKED, CostShape())
    assert model.fitted(Theta(1, 0, 0)) > model.fitted(Theta(10, 0, 0))
    assert model.fitted(Theta(1, 0, 0)) > model.fitted(Theta(0, 0, 0))


def test_choice_respects_the_budget_with_measured_contexts() -> None:
    model = fit(PEAKED, CostShape())
    for budget in (150, 300, 1000, 1600, 5000):
        chosen = choose(model, budget)
        assert model.context(chosen) <= budget
        fitting = [row for row in PEAKED if model.context(row.theta) <= budget]
        assert model.predict(chosen) == max(row.accuracy for row in fitting)
    assert choose(model, 1).k == 0  # nothing fits: the cheapest configuration


def test_fixed_values_fall_back_to_the_fitted_form_only_when_nothing_measured_matches() -> None:
    model = fit(PEAKED, CostShape())
    assert choose(model, None, fixed_n=0) == Theta(1, 0, 0)  # measured DRAG peak
    unmeasured = choose(model, None, fixed_k=2, fixed_n=0)
    assert unmeasured.k == 2 and unmeasured.n == 0 and model.measurement(unmeasured) is None
    assert choose(model, None, fixed_m=4, demos_available=16).m == 4
    assert choose(model, None, demos_available=0).m == 0


def test_context_cost_grows_with_every_dimension() -> None:
    cost = CostShape()
    base = context_cost(Theta(1, 0, 0), cost)
    assert context_cost(Theta(5, 0, 0), cost) > base
    assert context_cost(Theta(1, 2, 0), cost) > base
    assert context_cost(Theta(1, 0, 2), cost) > context_cost(Theta(1, 0, 1), cost) > base

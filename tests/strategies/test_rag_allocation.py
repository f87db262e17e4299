"""The RAG allocation model: the fit recovers known parameters; the choice respects the context budget."""

from __future__ import annotations

import math

from strategies.rag_allocation import AllocationModel, CostShape, Theta, choose, context_cost, fit

TRUE = AllocationModel(a=(0.6, 0.2, 0.3), b=(0.0, 0.0, 0.0), c=-1.0, i=(0.5, 0.1, 0.0))


def test_fit_recovers_predictions() -> None:
    runs = [
        (Theta(k, m, n), TRUE.predict(Theta(k, m, n)))
        for k in (1, 3, 5, 10)
        for m in (0, 1, 2)
        for n in (0, 1, 3)
    ]
    fitted = fit(runs, TRUE.i, CostShape())
    for theta, accuracy in runs:
        if 0.01 < accuracy < 0.99:
            assert math.isclose(fitted.predict(theta), accuracy, abs_tol=0.02)


def test_choice_fits_the_budget_and_grows_with_it() -> None:
    small, large = choose(TRUE, 300), choose(TRUE, 20000)
    assert context_cost(small, TRUE.cost) <= 300
    assert TRUE.predict(large) >= TRUE.predict(small)
    assert choose(TRUE, 20000, fixed_n=0).n == 0
    assert choose(TRUE, 1).k == 0  # nothing fits: the cheapest configuration

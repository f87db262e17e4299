"""Every closed form against numbers worked by hand (and the fLaws notebook's example)."""

import math

import pytest

from strategies.allocation import formulas

NOTEBOOK = [(0.58, 0.87), (0.42, 0.13)]  # prior / per-attempt accuracy of their two task types


@pytest.mark.parametrize(
    ("false_positive_value", "best_k", "utility"),
    [(-0.7, 3, 0.5246), (-1.0, 2, 0.4724), (-2.0, 1, 0.3388)],
)
def test_flaws_notebook_example(false_positive_value: float, best_k: int, utility: float) -> None:
    k, value = formulas.best_resampling_k(NOTEBOOK, 1.0, 0.75, false_positive_value, 15)
    assert k == best_k
    assert value == pytest.approx(utility, abs=5e-5)


def test_resampling_utility_by_hand() -> None:
    # r = 0.5, c = 1, s = 0.75: p_c = 0.5, p_f = 0.125, beta = 0.375. V_f = -1, K = 2:
    # (0.5 - 0.125) * (1 + 0.375) = 0.515625
    assert formulas.resampling_utility([(1.0, 0.5)], 1.0, 0.75, 2, -1.0) == pytest.approx(0.515625)


def test_abstain_when_every_k_loses() -> None:
    assert formulas.best_resampling_k([(1.0, 0.05)], 1.0, 0.5, -5.0, 15) == (0, 0.0)


def test_ceiling_and_within_k() -> None:
    # r = 0.3, c = 0.9, s = 0.8: p_c = 0.27, p_f = 0.14, ceiling = 0.27 / 0.41
    assert formulas.ceiling(0.3, 0.9, 0.8) == pytest.approx(0.27 / 0.41)
    a = formulas.attempt(0.3, 0.9, 0.8)
    assert a.rejected == pytest.approx(0.59)
    assert formulas.correct_within(a, 1) == pytest.approx(0.27)
    assert formulas.correct_within(a, 3) == pytest.approx(0.27 * (1 - 0.59**3) / 0.41)
    assert formulas.false_positive_within(a, 2) == pytest.approx(0.14 * (1 + 0.59))
    assert formulas.expected_samples(a, 2) == pytest.approx(1.59)
    assert formulas.correct_within(a, 10_000) == pytest.approx(formulas.ceiling(0.3, 0.9, 0.8))
    assert formulas.ceiling(0.3, 1.0, 1.0) == 1.0


def test_plurality_by_hand() -> None:
    assert formulas.plurality_win(1, 0.3, [0.2, 0.1]) == pytest.approx(0.3)
    # Two draws, correct 0.5, one wrong answer 0.5: win 0.25, tie 0.5 broken half the time.
    assert formulas.plurality_win(2, 0.5, [0.5]) == pytest.approx(0.5)
    # Three draws, p = 0.6, one wrong answer 0.4: P(at least 2 correct) = 0.648.
    assert formulas.plurality_win(3, 0.6, [0.4]) == pytest.approx(0.648)
    # Three draws, p = 0.5, wrong answers scattered (never win): 1 - 0.5^3 = 0.875.
    assert formulas.plurality_win(3, 0.5, []) == pytest.approx(0.875)
    # Three draws p = 1/3, two wrong answers of 1/3: all distinct (prob 6/27) is a 3-way tie: 1/3 of it;
    # correct twice or more: 7/27. Total 7/27 + 2/27 = 1/3 by symmetry.
    assert formulas.plurality_win(3, 1 / 3, [1 / 3, 1 / 3]) == pytest.approx(1 / 3)


def test_majority_grows_when_the_correct_answer_leads() -> None:
    values = [formulas.plurality_win(n, 0.4, [0.3, 0.1]) for n in (1, 3, 9, 27)]
    assert values == sorted(values) and values[-1] > 0.7


def test_saturation_and_pass_until() -> None:
    # p = 0.1, F_max = 1, eps = 0.01: ceil(ln(0.1) / ln(0.9)) = ceil(21.85) = 22
    assert formulas.saturation_samples(0.1, 1.0, 0.01) == 22
    assert formulas.saturation_samples(0.005, 1.0, 0.01) == 1
    assert formulas.pass_until_rate(3, 9) == pytest.approx(0.25)
    assert formulas.pass_until_rate(1, 5) == 0.0


def test_beta_mixture_is_a_distribution_with_the_right_mean() -> None:
    mixture = formulas.beta_mixture(3.0, 1.0, points=50)
    assert sum(w for w, _ in mixture) == pytest.approx(1.0)
    assert sum(w * r for w, r in mixture) == pytest.approx(0.75, abs=0.01)
    assert all(0 < r < 1 and not math.isnan(w) for w, r in mixture)

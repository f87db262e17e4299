import asyncio
import time
from fractions import Fraction

import pytest

from verifiers.calculator import CalculatorOptions, CalculatorVerifier, check_equations, find_equations
from verifiers.steps import Aggregate


@pytest.mark.parametrize(
    "text",
    [
        "2 + 3 = 5",
        "2 + 3 * 4 = 14",
        "(2 + 3) * 4 = 20",
        "12 x 3 = 36",
        "12 X 3 = 36",
        "5 × 6 = 30",
        "30 ÷ 5 = 6",
        "30 / 4 = 7.5",
        "10 − 4 = 6",
        "0.1 + 0.2 = 0.3",
        "1,200 + 300 = 1,500",
        "$12 * 3 = $36",
        "20% * 50 = 10",
        "50 * 20 / 100 = 10",
        "-3 + 5 = 2",
        "2^10 = 1024",
        "2(3 + 4) = 14",
        "3 \\times 4 = 12",
        "10 / 3 = 3.33",
        "2 / 3 = 0.667",
        "3 * 4 = 12 = 6 * 2",
        "She pays 4 * $2.50 = $10.00 in total.",
        "48/2 = <<48/2=24>>24 clips",
    ],
)
def test_right_equations_hold(text: str) -> None:
    checks = check_equations(text)
    assert checks and all(check.correct for check in checks), checks


@pytest.mark.parametrize(
    "text",
    [
        "2 + 3 = 6",
        "2 + 3 * 4 = 20",
        "12 x 3 = 35",
        "30 / 4 = 7",
        "7 / 2 = 3",
        "1,200 + 300 = 1,400",
        "0.1 + 0.2 = 0.30000001",
        "10 / 3 = 3.34",
        "5 / 0 = 0",
        "3 * 4 = 12 = 13",
        "**3 + 4 = 8**",
        "2^3 = 9",
    ],
)
def test_wrong_equations_fail(text: str) -> None:
    checks = check_equations(text)
    assert checks and not all(check.correct for check in checks), checks


def test_rounding_can_be_switched_off() -> None:
    assert not check_equations("10 / 3 = 3.33", rounding=False)[0].correct
    assert check_equations("10 / 4 = 2.5", rounding=False)[0].correct


@pytest.mark.parametrize(
    "text",
    [
        "",
        "No arithmetic here.",
        "The answer is 42.",
        "Let x = 5",
        "12 = 12",
        "2 + = 4",
        "= 5 + 3",
        "5 + 3 =",
        "2 + * 3 = 5",
        "7 5 = 12",
        "Step 1: think.",
        "a + b = c",
    ],
)
def test_text_without_a_checkable_equation_has_none(text: str) -> None:
    assert check_equations(text) == []


def test_two_equations_in_one_run_are_separated() -> None:
    checks = check_equations("3 + 4 = 7 2 + 2 = 5")
    assert [(check.text, check.correct) for check in checks] == [("3 + 4 = 7", True), ("2 + 2 = 5", False)]


def test_words_around_equations_are_ignored_and_values_exact() -> None:
    [sides] = find_equations("Step 2: so 1/3 + 1/6 = 0.5 of the cake.")
    assert [side.value for side in sides] == [Fraction(1, 2), Fraction(1, 2)]


def test_step_scores_follow_the_options() -> None:
    verifier = CalculatorVerifier()
    assert verifier.step_score("2 + 2 = 4") == 0.9
    assert verifier.step_score("2 + 2 = 4 and 3 + 3 = 7") == 0.05
    assert verifier.step_score("I add them.") == 0.5
    custom = CalculatorVerifier(CalculatorOptions(right_score=1.0, wrong_score=0.0, neutral_score=0.4))
    assert [custom.step_score(s) for s in ("1 + 1 = 2", "1 + 1 = 3", "hm")] == [1.0, 0.0, 0.4]


def test_candidates_are_scored_by_their_aggregated_steps() -> None:
    text = "First 2 + 3 = 6.\n\nThen 6 * 2 = 12.\n\nThe answer is 12."

    def score(how: Aggregate) -> list[float]:
        return asyncio.run(CalculatorVerifier(CalculatorOptions(aggregate=how)).score("q", [text, ""]))

    assert score("last") == [0.5, 0.5]
    assert score("min") == [0.05, 0.5]
    assert score("product") == [pytest.approx(0.05 * 0.9 * 0.5), 0.5]


def test_an_unbalanced_parenthesis_leaves_the_longest_expression_before_the_equals() -> None:
    assert [check.text for check in check_equations("((2 + 3) = 5")] == ["( 2 + 3 ) = 5"]


# -- hostile model output (issue 10): bounded, never raising, a neutral score ---------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "7" * 5000 + " + 1 = 2",
        "(" * 100_000 + "1" + ")" * 100_000 + " = 1 + 0",
        "(" * 100_000 + "1 + 1 = 2",
        "-" * 100_000 + "1 = 0 - 1",
        "((((((2^64)^64)^64)^64)^64)^64) = 2 + 2",
        " * ".join(["99999999999999999999"] * 120) + " = 1 + 1",
        "1 = 1 + 0 " * 3000,
    ],
    ids=["digits", "parens", "open", "minus", "power", "product", "many"],
)
def test_hostile_steps_are_bounded_and_never_raise(text: str) -> None:
    verifier = CalculatorVerifier()
    started = time.monotonic()
    score = verifier.candidate_score(text)
    assert 0.0 <= score <= 1.0
    assert time.monotonic() - started < 1.0


def test_nesting_past_the_limit_is_unchecked_not_an_error() -> None:
    deep = "(" * 100_000 + "1" + ")" * 100_000 + " = 2"
    assert check_equations(deep) == []
    assert CalculatorVerifier().candidate_score(deep) == CalculatorOptions().neutral_score
    assert [check.correct for check in check_equations("((((2)))) + 1 = 3")] == [True]


def test_scoring_runs_off_the_event_loop() -> None:
    async def scores() -> list[float]:
        return await CalculatorVerifier().score("q", ["2 + 2 = 4", "2 + 2 = 5", "(" * 100_000])

    assert asyncio.run(scores()) == [0.9, 0.05, 0.5]

import pytest

from service.runtime.errors import InvalidRequest
from verifiers.calculator import CalculatorOptions
from verifiers.steps import StepOptions, aggregate, parse_options, split_steps


def test_split_steps_on_the_default_blank_line() -> None:
    assert split_steps("First 2 + 2 = 4.\n\nThen 4 * 3 = 12.\n\n") == ["First 2 + 2 = 4.", "Then 4 * 3 = 12."]


def test_split_steps_drops_blank_steps_and_strips() -> None:
    assert split_steps("  a \n\n\n\n \n\n b\n") == ["a", "b"]
    assert split_steps("") == []
    assert split_steps("one line only\nstill one step") == ["one line only\nstill one step"]


def test_split_steps_with_another_delimiter() -> None:
    assert split_steps("a<step>b<step>", "<step>") == ["a", "b"]


@pytest.mark.parametrize(("how", "expected"), [("last", 0.8), ("min", 0.2), ("product", 0.5 * 0.2 * 0.8)])
def test_aggregate(how: str, expected: float) -> None:
    assert aggregate([0.5, 0.2, 0.8], how) == pytest.approx(expected)  # type: ignore[arg-type]


def test_aggregate_of_no_steps_is_the_empty_score_and_results_are_clipped() -> None:
    assert aggregate([], "min") == 0.5
    assert aggregate([], "last", empty=0.3) == 0.3
    assert aggregate([1.5], "last") == 1.0


def test_parse_options_defaults_and_values() -> None:
    options = parse_options(StepOptions, {"aggregate": "min", "delimiter": "\n"}, "x")
    assert options.aggregate == "min" and options.delimiter == "\n"
    assert parse_options(StepOptions, {}, "x").aggregate == "last"


@pytest.mark.parametrize(
    ("options", "param", "words"),
    [
        ({"aggregate": "mean"}, "verifier.aggregate", "last"),
        ({"delimiter": ""}, "verifier.delimiter", "at least 1"),
        ({"colour": "red"}, "verifier.colour", "has no option"),
        ({"right_score": 2}, "verifier.right_score", "less than or equal to 1"),
        ({"wrong_score": 0.6}, "verifier", "wrong_score <= neutral_score"),
    ],
)
def test_parse_options_rejects_bad_options_clearly(
    options: dict[str, object], param: str, words: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_options(CalculatorOptions, options, "calculator")
    assert raised.value.param == param and words in raised.value.message

import pytest

from verifiers.answers import AnswerSpec, answers_equal, extract_answer, normalize_number

NUMBER = AnswerSpec("number")
BOXED = AnswerSpec("boxed")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("23 + 45 = 78", "78"),
        ("The answer is 1,234.", "1234"),
        ("So the final answer is -7 apples, not 3", "-7"),
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
        ("It costs 2.50 dollars", "2.5"),
        ("no digits here", None),
    ],
)
def test_number_extraction(text: str, expected: str | None) -> None:
    assert extract_answer(text, NUMBER) == expected


def test_boxed_extraction_handles_nested_braces() -> None:
    assert extract_answer(r"so \boxed{\frac{1}{2}} done", BOXED) == r"\frac{1}{2}"
    assert extract_answer(r"\boxed{12} then \boxed{ 13 }", BOXED) == "13"
    assert extract_answer("no box", BOXED) is None


def test_regex_and_text() -> None:
    spec = AnswerSpec("regex", r"Answer: (\w+)")
    assert extract_answer("Answer: Paris. Answer: Lyon", spec) == "lyon"
    assert extract_answer("  Paris.  ", AnswerSpec("text")) == "paris"


def test_number_normalization() -> None:
    assert normalize_number("3/6") == "0.5"
    assert normalize_number("2/6") == "1/3"
    assert normalize_number("1,000.50") == "1000.5"
    assert normalize_number("abc") is None


def test_equivalence() -> None:
    assert answers_equal("72", "72.0", NUMBER)
    assert not answers_equal("71", "72", NUMBER)
    assert not answers_equal(None, "72", NUMBER)
    assert answers_equal(r"\frac{1}{2}", "0.5", BOXED)
    assert answers_equal("0.5", r"\frac{1}{2}", BOXED)

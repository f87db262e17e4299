import math

from service.runtime.engine import TokenLogprob
from verifiers.judge import yes_probability


def test_yes_probability_normalizes_yes_against_no() -> None:
    token = TokenLogprob(
        "Yes", math.log(0.6), (("Yes", math.log(0.6)), (" no", math.log(0.2)), ("Maybe", math.log(0.2)))
    )
    assert abs(yes_probability(token) - 0.75) < 1e-9


def test_yes_probability_without_an_opinion_is_a_coin() -> None:
    assert yes_probability(None) == 0.5
    assert yes_probability(TokenLogprob("Hmm", -0.1, (("Hmm", -0.1),))) == 0.5

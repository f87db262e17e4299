from strategies.base import Candidate
from strategies.selection import cannot_be_overtaken, confident, ranked, select


def candidates(*pairs: tuple[str | None, float]) -> list[Candidate]:
    return [
        Candidate(text=f"t{i} {answer}", answer=answer, score=score)
        for i, (answer, score) in enumerate(pairs)
    ]


def test_majority_counts_votes_and_ignores_missing_answers() -> None:
    pool = candidates(("5", 0.1), ("7", 0.9), ("5", 0.2), (None, 1.0))
    chosen = select(pool, "majority")
    assert chosen is not None and chosen.answer == "5"
    assert [c.votes for c in pool] == [2, 1, 2, 0]


def test_weighted_vote_sums_scores() -> None:
    pool = candidates(("5", 0.1), ("7", 0.9), ("5", 0.2))
    chosen = select(pool, "weighted")
    assert chosen is not None and chosen.answer == "7"


def test_max_takes_the_best_scored_candidate() -> None:
    pool = candidates(("5", 0.5), ("7", 0.6), ("5", 0.5))
    chosen = select(pool, "max")
    assert chosen is not None and chosen.answer == "7"


def test_majority_tie_goes_to_higher_score_then_earlier() -> None:
    assert (select(candidates(("1", 0.0), ("2", 0.0)), "majority") or Candidate("", None)).answer == "1"
    assert (select(candidates(("1", 0.1), ("2", 0.3)), "majority") or Candidate("", None)).answer == "2"


def test_no_candidates_means_no_choice() -> None:
    assert select([], "majority") is None


def test_early_stop_rule() -> None:
    pool = candidates(("5", 1), ("5", 1), ("5", 1), ("7", 1))
    assert cannot_be_overtaken(pool, "majority", 1)
    assert not cannot_be_overtaken(pool, "majority", 2)


def test_ranked_puts_the_winning_answer_first() -> None:
    pool = candidates(("7", 0.9), ("5", 0.1), ("5", 0.2))
    assert [c.answer for c in ranked(pool, "majority")][:2] == ["5", "5"]


def test_the_confidence_vote_keeps_only_the_most_confident_samples() -> None:
    # three low-confidence samples agree on 5; the two most confident say 7: with the top 40% voting, 7 wins
    pool = candidates(("5", 1.0), ("5", 1.1), ("5", 1.2), ("7", 3.0), ("7", 2.9))
    chosen = confident(pool, keep_percent=40)
    assert chosen is not None and chosen.answer == "7"
    assert [c.votes for c in pool] == [0, 0, 0, 2, 2]
    # everyone voting, weighted by confidence: 5 (1.0 + 1.1 + 1.2) beats 7 (1.5)
    everyone = confident(candidates(("5", 1.0), ("5", 1.1), ("5", 1.2), ("7", 1.5)), keep_percent=100)
    assert everyone is not None and everyone.answer == "5"


def test_the_confidence_vote_without_confidences_is_a_majority() -> None:
    pool = candidates(("5", 0.0), ("7", 0.0), ("5", 0.0))
    for candidate in pool:
        candidate.score = None
    chosen = confident(pool, keep_percent=10)
    assert chosen is not None and chosen.answer == "5"

"""IterDRAG's structured outputs, as pure logic: the intermediate answer is a span of the documents shown,
never one that starts with the bridge entity the hop asked about."""

from __future__ import annotations

import re
from dataclasses import dataclass

from strategies.rag import ANSWER, answer_pattern, document_spans


@dataclass(frozen=True)
class Doc:
    title: str
    text: str
    score: float = 1.0


KELVADI = Doc("Kelvadi", "Kelvadi is a town in the Gloam region. The Drune river flows through Kelvadi.")


def matches(pattern: str, answer: str) -> bool:
    return re.fullmatch(pattern, " " + answer) is not None


def test_spans_stay_inside_one_sentence_and_drop_punctuation() -> None:
    spans = document_spans([KELVADI], max_words=3)
    assert "Drune" in spans and "The Drune river" in spans and "Gloam region" in spans
    assert "region The" not in spans  # crosses a sentence end
    assert all("." not in span for span in spans)


def test_an_answer_is_a_document_span_that_does_not_start_with_the_bridge() -> None:
    pattern = answer_pattern("Kelvadi", [KELVADI])
    assert matches(pattern, "Drune") and matches(pattern, "The Drune river")
    assert not matches(pattern, "Kelvadi") and not matches(pattern, "Kelvadi is a")
    assert not matches(pattern, "Kelvadaei (Glampi)")  # what the model wrote when any text was allowed


def test_without_documents_any_short_answer_but_the_bridge() -> None:
    assert answer_pattern(None) == ANSWER
    pattern = answer_pattern("Kelvadi")
    assert matches(pattern, "Drune") and not matches(pattern, "Kelvadi")

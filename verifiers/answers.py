"""Final-answer extraction and equivalence: what voting groups by and what reference checks compare.

Numbers are handled here exactly (commas, signs, decimals, simple fractions); LaTeX answers such as
`\\boxed{\\frac{1}{2}}` go to math-verify, which knows that it equals 0.5.

Everything here reads model output, so nothing here may raise on it or run long: a number of more than
MAX_NUMBER_DIGITS digits is no number, and the caller's `answer.pattern` runs in the `regex` module with a
time limit per match and a time allowance per request (a pattern such as `(a|aa)+$` backtracks exponentially
in `re`); past either, the candidate simply has no answer.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import regex

AnswerType = Literal["number", "boxed", "text", "regex", "json"]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_FINAL_MARKERS = re.compile(r"(?:####|final answer is|answer is|answer:)\s*", re.IGNORECASE)

MAX_NUMBER_DIGITS = 200  # longer digit strings are not answers (and would cost quadratic int conversion)
MAX_PATTERN_TEXT_CHARS = 32_000  # a caller's pattern sees at most the last this many characters
PATTERN_TIMEOUT_SECONDS = 0.05  # one search with the caller's pattern
PATTERN_ALLOWANCE_SECONDS = 0.5  # all searches with the caller's pattern for one request together


class PatternClock:
    """The time one request's `answer.pattern` has used so far; once the allowance is spent, the pattern
    finds nothing (so 256 candidates cannot each use the whole per-search limit)."""

    def __init__(self, allowance: float = PATTERN_ALLOWANCE_SECONDS) -> None:
        self.left = allowance

    def search(self, pattern: str, text: str) -> list[regex.Match[str]]:
        if self.left <= 0:
            return []
        started = time.monotonic()
        try:
            timeout = min(PATTERN_TIMEOUT_SECONDS, self.left)
            return list(regex.finditer(pattern, text[-MAX_PATTERN_TEXT_CHARS:], timeout=timeout))
        except (TimeoutError, regex.error):
            return []
        finally:
            self.left -= time.monotonic() - started


@dataclass(frozen=True)
class AnswerSpec:
    """How to read the final answer out of a candidate's text (one per request: `clock` is its pattern's
    time allowance)."""

    type: AnswerType = "number"
    pattern: str | None = None
    clock: PatternClock = field(default_factory=PatternClock, compare=False, repr=False)


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for position in range(brace, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : position].strip()
    return None


def _number(text: str) -> str | None:
    """The number after a final-answer marker if there is one, else the last number in the text."""
    markers = list(_FINAL_MARKERS.finditer(text))
    region = text[markers[-1].end() :] if markers else text
    found = _NUMBER.findall(region)
    if markers and found:
        return normalize_number(found[0])
    found = found or _NUMBER.findall(text)
    return normalize_number(found[-1]) if found else None


def normalize_number(raw: str) -> str | None:
    """'1,000.50' -> '1000.5', '3/6' -> '1/2', '-0' -> '0'; None if it is not a number."""
    cleaned = raw.replace(",", "").strip().rstrip(".")
    if sum(character.isdigit() for character in cleaned) > MAX_NUMBER_DIGITS:
        return None
    try:
        value = Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    decimal = float(value)
    if Fraction(repr(decimal)) == value:
        return repr(decimal)
    return f"{value.numerator}/{value.denominator}"


def normalize_text(text: str) -> str:
    return " ".join(text.strip().strip(".").lower().split())


def canonical_json(text: str) -> str | None:
    """The parsed JSON value in one canonical form (sorted keys, no spaces), so that equal values vote
    together however they were written; None when the text is not JSON (such a candidate never wins a vote)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def extract_answer(text: str, spec: AnswerSpec) -> str | None:
    """The candidate's final answer in canonical form, or None when it gives none."""
    if spec.type == "json":
        return canonical_json(text)
    if spec.type == "number":
        return _number(text)
    if spec.type == "boxed":
        boxed = _last_boxed(text)
        if boxed is None:
            return None
        as_number = normalize_number(boxed)
        return as_number if as_number is not None else " ".join(boxed.split())
    if spec.type == "regex":
        if not spec.pattern:
            return None
        matches = spec.clock.search(spec.pattern, text)
        if not matches:
            return None
        last = matches[-1]
        return normalize_text(last.group(1) if last.groups() else last.group(0))
    stripped = normalize_text(text)
    return stripped or None


def answers_equal(candidate: str | None, reference: str, spec: AnswerSpec) -> bool:
    """Whether an extracted answer equals the reference answer (both as a person would write them)."""
    if candidate is None:
        return False
    if spec.type == "json":
        return candidate == canonical_json(reference)
    reference_number = normalize_number(reference)
    if spec.type == "number" and reference_number is None:
        reference_number = _number(reference)
    candidate_number = normalize_number(candidate)
    if reference_number is not None and candidate_number is not None:
        return Fraction(reference_number) == Fraction(candidate_number)
    if spec.type == "boxed":
        return _latex_equal(candidate, reference)
    return normalize_text(candidate) == normalize_text(reference)


MAX_LATEX_CHARS = 1000  # longer answers are compared as text: sympy parsing them could take seconds


def _latex_equal(candidate: str, reference: str) -> bool:
    if max(len(candidate), len(reference)) > MAX_LATEX_CHARS:
        return normalize_text(candidate) == normalize_text(reference)
    from math_verify import parse, verify

    try:
        gold = parse(f"${reference}$", parsing_timeout=2)
        answer = parse(f"${candidate}$", parsing_timeout=2)
        return bool(gold and answer and verify(gold, answer, timeout_seconds=2))
    except Exception:  # math-verify raises on threads and odd input; fall back to text
        return normalize_text(candidate) == normalize_text(reference)

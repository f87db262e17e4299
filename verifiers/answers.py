"""Final-answer extraction and equivalence: what voting groups by and what reference checks compare.

Numbers are handled here exactly (commas, signs, decimals, simple fractions); LaTeX answers such as
`\\boxed{\\frac{1}{2}}` go to math-verify, which knows that it equals 0.5.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

AnswerType = Literal["number", "boxed", "text", "regex", "json"]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_FINAL_MARKERS = re.compile(r"(?:####|final answer is|answer is|answer:)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class AnswerSpec:
    """How to read the final answer out of a candidate's text."""

    type: AnswerType = "number"
    pattern: str | None = None


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
        matches = list(re.finditer(spec.pattern, text))
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


def _latex_equal(candidate: str, reference: str) -> bool:
    from math_verify import parse, verify

    try:
        gold = parse(f"${reference}$", parsing_timeout=2)
        answer = parse(f"${candidate}$", parsing_timeout=2)
        return bool(gold and answer and verify(gold, answer, timeout_seconds=2))
    except Exception:  # math-verify raises on threads and odd input; fall back to text
        return normalize_text(candidate) == normalize_text(reference)

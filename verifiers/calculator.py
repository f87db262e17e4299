"""Calculator step checker: every arithmetic equation written in a step (`12 * 3 = 36`, chains such as
`2 + 3 * 4 = 14 = 7 * 2`) is evaluated exactly with fractions by a small parser of its own (never `eval`).
A step with a wrong equation scores low, a step whose equations are all right scores high, and a step
without any equation is neutral.

It is a real but imperfect process verifier: right arithmetic can still be the wrong reasoning, and a
solution without equations tells it nothing. `loadtests/calculator_verifier.py` measures how imperfect
(completeness and soundness, stored in `verifiers/calibration/calculator.json`).

It reads model output, so it is bounded and never raises on it: numbers of more than MAX_DIGITS digits,
nesting deeper than MAX_DEPTH, expressions longer than MAX_EXPRESSION_TOKENS and results beyond MAX_BITS
are not checked (such a step is neutral), and only the first MAX_TEXT_CHARS characters of a step are read.
Scoring runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise

from pydantic import Field, model_validator

from verifiers.steps import StepOptions, aggregate, split_steps

MAX_EXPONENT = 64
MAX_DIGITS = 100  # a literal with more digits is not arithmetic a step checks
MAX_DEPTH = 32  # parentheses nested deeper end the expression (the parser recurses per level)
MAX_EXPRESSION_TOKENS = 128  # a side of an equation longer than this is not checked
MAX_BITS = 4096  # an intermediate value larger than 2**MAX_BITS is undefined (no huge-number arithmetic)
MAX_TEXT_CHARS = 20_000  # the part of one step that is read

# One alternative per token kind; "other" is anything that ends an arithmetic run (words, colons, `**`...).
TOKEN = re.compile(
    r"""
    (?P<space>\s+|\$|\\[,;!\ ])
    |(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)
    |(?P<other>\*\*|[A-Za-z]{2,})
    |(?P<op>[+\-−–*×·/÷^]|\\times|\\cdot|\\div|(?<![A-Za-z])[xX](?![A-Za-z]))
    |(?P<percent>%|\\%)
    |(?P<open>\(|\\left\()
    |(?P<close>\)|\\right\))
    |(?P<equals>=)
    |(?P<rest>.)
    """,
    re.VERBOSE,
)
OPERATORS = {
    "−": "-",
    "–": "-",
    "×": "*",
    "·": "*",
    "x": "*",
    "X": "*",
    "\\times": "*",
    "\\cdot": "*",
    "÷": "/",
    "\\div": "/",
}


@dataclass(frozen=True)
class Token:
    kind: str  # number, op, percent, open, close, equals
    text: str


@dataclass(frozen=True)
class Expression:
    text: str
    value: Fraction | None  # None: undefined (division by zero, huge power)
    has_operator: bool
    decimals: int | None  # digits after the point when the expression is one literal number, else None


@dataclass(frozen=True)
class EquationCheck:
    text: str
    correct: bool


class ParseError(ValueError):
    pass


def tokenize_runs(text: str) -> list[list[Token]]:
    """Maximal runs of arithmetic tokens; words and other characters end a run."""
    runs: list[list[Token]] = [[]]
    for match in TOKEN.finditer(text):
        kind = match.lastgroup or "rest"
        if kind == "space":
            continue
        if kind in {"other", "rest"}:
            if runs[-1]:
                runs.append([])
            continue
        value = match.group()
        if kind == "op":
            value = OPERATORS.get(value, value)
        runs[-1].append(Token(kind, value))
    return [run for run in runs if run]


class _Parser:
    """Recursive descent: sum := product (+|- product)*; product := unary ((*|/) unary | implicit (...))*;
    unary := - unary | power; power := postfix (^ unary)?; postfix := atom %*; atom := number | ( sum )."""

    def __init__(self, tokens: Sequence[Token]) -> None:
        self.tokens = tokens
        self.at = 0
        self.has_operator = False
        self.undefined = False
        self.depth = 0

    def peek(self) -> Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise ParseError("unexpected end")
        self.at += 1
        return token

    def parse(self) -> Fraction:
        value = self.sum()
        if self.peek() is not None:
            raise ParseError(f"unexpected {self.tokens[self.at].text!r}")
        return value

    def sum(self) -> Fraction:
        value = self.product()
        while (token := self.peek()) is not None and token.kind == "op" and token.text in "+-":
            self.take()
            right = self.product()
            value = value + right if token.text == "+" else value - right
            self.has_operator = True
        return value

    def product(self) -> Fraction:
        value = self.unary()
        while (token := self.peek()) is not None:
            if token.kind == "op" and token.text in "*/":
                self.take()
                right = self.unary()
            elif token.kind == "open":  # 2(3 + 4)
                right = self.unary()
            else:
                break
            self.has_operator = True
            if token.text == "/":
                if right == 0:
                    self.undefined = True
                    right = Fraction(1)
                value = value / right
            else:
                value = value * right
            value = self.bounded(value)
        return value

    def bounded(self, value: Fraction) -> Fraction:
        """The value, or 1 marked undefined once it outgrows MAX_BITS (products of long chains)."""
        if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
            self.undefined = True
            return Fraction(1)
        return value

    def unary(self) -> Fraction:
        token = self.peek()
        if token is not None and token.kind == "op" and token.text == "-":
            self.take()
            return -self.unary()
        return self.power()

    def power(self) -> Fraction:
        base = self.postfix()
        token = self.peek()
        if token is None or token.text != "^":
            return base
        self.take()
        exponent = self.unary()
        self.has_operator = True
        if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT or (base == 0 and exponent < 0):
            self.undefined = True
            return Fraction(1)
        size = max(base.numerator.bit_length(), base.denominator.bit_length())
        if size * abs(exponent.numerator) > MAX_BITS:
            self.undefined = True
            return Fraction(1)
        return Fraction(base**exponent.numerator)

    def postfix(self) -> Fraction:
        value = self.atom()
        while (token := self.peek()) is not None and token.kind == "percent":
            self.take()
            value = value / 100
            self.has_operator = True
        return value

    def atom(self) -> Fraction:
        token = self.take()
        if token.kind == "number":
            digits = token.text.replace(",", "")
            if len(digits) > MAX_DIGITS:
                raise ParseError("number too long")
            return Fraction(digits)
        if token.kind == "open":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ParseError("nested too deeply")
            value = self.sum()
            if self.take().kind != "close":
                raise ParseError("unbalanced parenthesis")
            self.depth -= 1
            return value
        raise ParseError(f"unexpected {token.text!r}")


def parse_expression(tokens: Sequence[Token]) -> Expression | None:
    """The expression the tokens spell, or None if they do not spell one (or one too big to check)."""
    if not tokens or len(tokens) > MAX_EXPRESSION_TOKENS:
        return None
    parser = _Parser(tokens)
    try:
        value = parser.parse()
    except ParseError:
        return None
    decimals = None
    if len(tokens) == 1:
        decimals = len(tokens[0].text.partition(".")[2])
    text = " ".join(token.text for token in tokens)
    return Expression(text, None if parser.undefined else value, parser.has_operator, decimals)


def longest_prefix(tokens: Sequence[Token]) -> tuple[Expression | None, int]:
    for end in range(min(len(tokens), MAX_EXPRESSION_TOKENS), 0, -1):
        expression = parse_expression(tokens[:end])
        if expression is not None:
            return expression, end
    return None, 0


def longest_suffix(tokens: Sequence[Token]) -> tuple[Expression | None, int]:
    for start in range(max(0, len(tokens) - MAX_EXPRESSION_TOKENS), len(tokens)):
        expression = parse_expression(tokens[start:])
        if expression is not None:
            return expression, start
    return None, len(tokens)


def split_on_equals(run: Sequence[Token]) -> list[list[Token]]:
    segments: list[list[Token]] = [[]]
    for token in run:
        if token.kind == "equals":
            segments.append([])
        else:
            segments[-1].append(token)
    return segments


def find_equations(text: str) -> list[list[Expression]]:
    """Every equation chain in the text, as its sides (two or more), in order of appearance.

    Between two `=` a segment that is not one expression (`= 7 2 + 2 =`) ends one equation with its
    longest leading expression and starts the next with its longest trailing one."""
    equations: list[list[Expression]] = []
    for run in tokenize_runs(text):
        segments = split_on_equals(run)
        if len(segments) < 2:
            continue
        chain: list[Expression] = []
        first, _ = longest_suffix(segments[0])
        if first is not None:
            chain.append(first)
        for position, segment in enumerate(segments[1:], start=1):
            last = position == len(segments) - 1
            whole = None if last else parse_expression(segment)
            if whole is not None:
                chain.append(whole)
                continue
            head, _ = longest_prefix(segment)
            if head is not None and chain:
                chain.append(head)
            if len(chain) >= 2:
                equations.append(chain)
            chain = []
            if not last:
                tail, start = longest_suffix(segment)
                if tail is not None and start > 0:
                    chain.append(tail)
        if len(chain) >= 2:
            equations.append(chain)
    return [sides for sides in equations if any(side.has_operator for side in sides)]


def sides_agree(left: Expression, right: Expression, rounding: bool) -> bool:
    """Exact equality; with `rounding`, a side written as a decimal literal (`= 3.33`) may be the other
    side rounded to the digits written; an integer literal must be exact (`7 / 2 = 3` is wrong)."""
    if left.value is None or right.value is None:
        return False
    if left.value == right.value:
        return True
    if not rounding:
        return False
    written = [side.decimals for side in (left, right) if side.decimals is not None]
    decimals = min(written, default=0)  # the coarser literal is the rounded one
    return decimals > 0 and abs(left.value - right.value) <= Fraction(1, 2 * 10**decimals)


def check_equations(text: str, rounding: bool = True) -> list[EquationCheck]:
    """Each equation of the text with whether every `=` in it holds."""
    checks = []
    for sides in find_equations(text[:MAX_TEXT_CHARS]):
        correct = all(sides_agree(a, b, rounding) for a, b in pairwise(sides))
        checks.append(EquationCheck(" = ".join(side.text for side in sides), correct))
    return checks


class CalculatorOptions(StepOptions):
    right_score: float = Field(0.9, ge=0, le=1, description="Score of a step whose equations all hold.")
    wrong_score: float = Field(0.05, ge=0, le=1, description="Score of a step with a wrong equation.")
    neutral_score: float = Field(0.5, ge=0, le=1, description="Score of a step without any equation.")
    rounding: bool = Field(True, description="Accept a decimal result rounded to the digits written.")

    @model_validator(mode="after")
    def ordered(self) -> CalculatorOptions:
        if not self.wrong_score <= self.neutral_score <= self.right_score:
            raise ValueError("the scores must satisfy wrong_score <= neutral_score <= right_score")
        return self


class CalculatorVerifier:
    name = "calculator"

    def __init__(self, options: CalculatorOptions | None = None) -> None:
        self.options = options or CalculatorOptions()

    def step_score(self, step: str) -> float:
        checks = check_equations(step, self.options.rounding)
        if not checks:
            return self.options.neutral_score
        if all(check.correct for check in checks):
            return self.options.right_score
        return self.options.wrong_score

    def candidate_score(self, text: str) -> float:
        steps = split_steps(text, self.options.delimiter)
        scores = [self.step_score(step) for step in steps]
        return aggregate(scores, self.options.aggregate, self.options.neutral_score)

    def scores_now(self, candidates: Sequence[str]) -> list[float]:
        return [self.candidate_score(text) for text in candidates]

    async def score(self, question: str, candidates: Sequence[str]) -> list[float]:
        return await asyncio.to_thread(self.scores_now, candidates)

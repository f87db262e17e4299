"""The RAG allocation model of Yue et al. (papers.md §5): predicted accuracy of a configuration
theta = (k documents, m demonstrations, n iterations) is

    sigmoid( (a + b * i) . log(theta + 0.01) + c ),   i = (gain of one document, gain of one demonstration, 0)

fitted by least squares on sigma^-1 of measured accuracies (loadtests/rag.py writes the fit to
`rag_allocation.json`). With a context budget, the chosen theta is the best predicted one whose estimated
effective context length (input tokens over all calls) fits.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FIT_FILE = Path(__file__).with_name("rag_allocation.json")
GRID_K = (0, 1, 2, 3, 5, 10)
GRID_M = (0, 1, 2, 4)
GRID_N = (0, 1, 2, 3)
RIDGE = 1e-3  # with one corpus, a and b*i are collinear: a little ridge makes the fit unique


@dataclass(frozen=True)
class Theta:
    k: int
    m: int
    n: int


@dataclass(frozen=True)
class CostShape:
    """Token sizes that estimate a configuration's effective context length."""

    base_tokens: float = 80.0  # instructions, question, template
    doc_tokens: float = 40.0  # one retrieved document
    demo_tokens: float = 30.0  # one demonstration's question and answer
    step_tokens: float = 30.0  # one follow-up plus its intermediate answer


@dataclass(frozen=True)
class AllocationModel:
    a: tuple[float, float, float]
    b: tuple[float, float, float]
    c: float
    i: tuple[float, float, float]
    cost: CostShape = CostShape()

    def predict(self, theta: Theta) -> float:
        logs = np.log(np.array([theta.k, theta.m, theta.n], dtype=float) + 0.01)
        weights = np.array(self.a) + np.array(self.b) * np.array(self.i)
        return float(1.0 / (1.0 + math.exp(-(float(weights @ logs) + self.c))))

    def save(self, path: Path = FIT_FILE) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path = FIT_FILE) -> AllocationModel | None:
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(
            a=tuple(raw["a"]),
            b=tuple(raw["b"]),
            c=float(raw["c"]),
            i=tuple(raw["i"]),
            cost=CostShape(**raw.get("cost", {})),
        )


def context_cost(theta: Theta, cost: CostShape) -> float:
    """Estimated input tokens over all calls: one call for DRAG; IterDRAG re-reads a growing prompt
    about twice per iteration, plus the final call."""
    first = cost.base_tokens + (theta.m + 1) * theta.k * cost.doc_tokens + theta.m * cost.demo_tokens
    if theta.n == 0:
        return first
    total = 0.0
    for step in range(theta.n):
        grown = first + step * (theta.k * cost.doc_tokens + cost.step_tokens)
        total += grown + grown + theta.k * cost.doc_tokens  # sub-question call, intermediate-answer call
    return total + first + theta.n * (theta.k * cost.doc_tokens + cost.step_tokens)


def logit(p: float) -> float:
    p = min(max(p, 0.01), 0.99)
    return math.log(p / (1 - p))


def fit(runs: list[tuple[Theta, float]], i: tuple[float, float, float], cost: CostShape) -> AllocationModel:
    """Least squares (lightly ridged) of logit(accuracy) on log(theta + 0.01) and i * log(theta + 0.01)."""
    rows, targets = [], []
    for theta, accuracy in runs:
        logs = np.log(np.array([theta.k, theta.m, theta.n], dtype=float) + 0.01)
        rows.append(np.concatenate([logs, np.array(i) * logs, [1.0]]))
        targets.append(logit(accuracy))
    x, y = np.array(rows), np.array(targets)
    solution = np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ y)
    return AllocationModel(
        a=(float(solution[0]), float(solution[1]), float(solution[2])),
        b=(float(solution[3]), float(solution[4]), float(solution[5])),
        c=float(solution[6]),
        i=i,
        cost=cost,
    )


def choose(
    model: AllocationModel,
    context_budget: float | None,
    fixed_k: int | None = None,
    fixed_m: int | None = None,
    fixed_n: int | None = None,
    demos_available: int = 16,
) -> Theta:
    """The best predicted theta that fits the budget (the cheapest one if none does)."""
    grid = [
        Theta(k, m, n)
        for k, m, n in itertools.product(
            (fixed_k,) if fixed_k is not None else GRID_K,
            (fixed_m,) if fixed_m is not None else GRID_M,
            (fixed_n,) if fixed_n is not None else GRID_N,
        )
        if m <= demos_available or fixed_m is not None
    ]
    fitting = [t for t in grid if context_budget is None or context_cost(t, model.cost) <= context_budget]
    if not fitting:
        return min(grid, key=lambda t: context_cost(t, model.cost))
    return max(fitting, key=lambda t: (model.predict(t), -context_cost(t, model.cost)))

"""The RAG allocation model of Yue et al. (papers.md §5), anchored on its own measurements.

A configuration is theta = (k documents, m demonstrations, n follow-up rounds). Yue et al. predict its accuracy
as sigmoid((a + b * i) . log(theta + 0.01) + c). That form is monotone in each of k, m and n, so it cannot
express what this model measures: accuracy peaks at small k and falls for long contexts (DRAG k=1 20%, k=10
3%), and a fit of it ranked the measured grid wrongly and chose the worst configuration. So:

- the form gains a quadratic term in log(theta + 0.01) per dimension (a peak), fitted by ridged least squares
  on logit(accuracy);
- every measured configuration (loadtests/rag.py writes them to `rag_allocation.json`, with their mean
  effective context) is scored by its MEASURED accuracy, and `choose` picks among measured configurations
  whenever one matches the request and fits the budget; the fitted form only fills in configurations nobody
  measured (a request that fixes k to an unmeasured value, or a budget no measured configuration fits).

So the choice can never be worse than the best measured configuration that fits: with no context budget it is
the configuration of highest measured accuracy.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FIT_FILE = Path(__file__).with_name("rag_allocation.json")
GRID_K = (0, 1, 2, 3, 5, 10)
GRID_M = (0, 1, 2, 4)
GRID_N = (0, 1, 2, 3)
RIDGE = 1e-2  # a few runs, seven free parameters: a little ridge keeps the fit unique and tame


@dataclass(frozen=True, order=True)
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
class Measurement:
    """One configuration as the benchmark ran it: accuracy and mean effective context per question."""

    theta: Theta
    accuracy: float
    context_tokens: float
    questions: int = 0


def features(theta: Theta) -> np.ndarray:
    """log(theta + 0.01) and its square per dimension: the log-linear form plus a peak."""
    logs = np.log(np.array([theta.k, theta.m, theta.n], dtype=float) + 0.01)
    return np.concatenate([logs, logs**2])


@dataclass(frozen=True)
class AllocationModel:
    weights: tuple[float, ...]  # on features(theta): 3 linear, 3 quadratic
    c: float
    cost: CostShape = CostShape()
    measured: tuple[Measurement, ...] = field(default=())

    def fitted(self, theta: Theta) -> float:
        """The fitted form's prediction (what fills in between measurements)."""
        z = float(np.array(self.weights) @ features(theta)) + self.c
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def measurement(self, theta: Theta) -> Measurement | None:
        return next((row for row in self.measured if row.theta == theta), None)

    def predict(self, theta: Theta) -> float:
        """Measured accuracy where there is one, else the fitted form."""
        row = self.measurement(theta)
        return row.accuracy if row is not None else self.fitted(theta)

    def context(self, theta: Theta) -> float:
        """Expected effective context: measured where there is one (never below the estimate)."""
        estimate = context_cost(theta, self.cost)
        row = self.measurement(theta)
        return max(row.context_tokens, estimate) if row is not None else estimate

    def save(self, path: Path = FIT_FILE) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path = FIT_FILE) -> AllocationModel | None:
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        if "weights" not in raw:  # an old log-linear fit: ignore it rather than trust it
            return None
        return cls(
            weights=tuple(float(w) for w in raw["weights"]),
            c=float(raw["c"]),
            cost=CostShape(**raw.get("cost", {})),
            measured=tuple(
                Measurement(
                    Theta(**row["theta"]),
                    float(row["accuracy"]),
                    float(row["context_tokens"]),
                    int(row.get("questions", 0)),
                )
                for row in raw.get("measured", [])
            ),
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


def fit(measured: list[Measurement], cost: CostShape) -> AllocationModel:
    """Ridged least squares of logit(accuracy) on features(theta); the measurements are kept as the anchors."""
    x = np.array([np.concatenate([features(row.theta), [1.0]]) for row in measured])
    y = np.array([logit(row.accuracy) for row in measured])
    penalty = RIDGE * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is free
    solution = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    return AllocationModel(
        weights=tuple(float(w) for w in solution[:-1]),
        c=float(solution[-1]),
        cost=cost,
        measured=tuple(measured),
    )


def choose(
    model: AllocationModel,
    context_budget: float | None,
    fixed_k: int | None = None,
    fixed_m: int | None = None,
    fixed_n: int | None = None,
    demos_available: int = 16,
) -> Theta:
    """The configuration to run: the best MEASURED one that matches the request's fixed values and fits the
    budget (ties: the cheaper); only when none does, the best fitted one on the grid that fits; when nothing
    fits, the cheapest."""

    def matches(theta: Theta) -> bool:
        return (
            (fixed_k is None or theta.k == fixed_k)
            and (fixed_m is None or theta.m == fixed_m)
            and (fixed_n is None or theta.n == fixed_n)
            and (theta.m <= demos_available or fixed_m is not None)
        )

    def fits(theta: Theta) -> bool:
        return context_budget is None or model.context(theta) <= context_budget

    measured = [row.theta for row in model.measured if matches(row.theta) and fits(row.theta)]
    if measured:
        return max(measured, key=lambda t: (model.predict(t), -model.context(t)))
    grid = [
        Theta(k, m, n)
        for k, m, n in itertools.product(
            (fixed_k,) if fixed_k is not None else GRID_K,
            (fixed_m,) if fixed_m is not None else GRID_M,
            (fixed_n,) if fixed_n is not None else GRID_N,
        )
        if matches(Theta(k, m, n))
    ]
    fitting = [t for t in grid if fits(t)]
    if not fitting:
        return min(grid, key=model.context)
    return max(fitting, key=lambda t: (model.predict(t), -model.context(t)))

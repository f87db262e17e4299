"""ETS (efficient tree search): REBASE, but before the width is split an integer program prunes the frontier
to the nodes worth their KV cache, while keeping one node of every semantic cluster where that pays.

    maximize  sum_i O_i x_i  -  lambda_b * (sum_j c_j y_j + sum_i c_i x_i) / C  +  (lambda_s / K) * sum_k z_k
    s.t.      y_j <= sum_{i under j} x_i,  y_j >= x_i (i under j),  z_k <= sum_{i in k} x_i,  1 <= sum_i x_i <= W

x_i keeps frontier node i, y_j keeps ancestor j, z_k covers cluster k; O_i is i's REBASE share. Unlike the
reference code, a node's cost c is its token count (its real KV footprint) and C is the tokens of the whole
live tree below the prompt, so lambda_b keeps its meaning: keeping everything costs lambda_b, as with ETS's
uniform cost 1/(M+N). The program runs in a thread with a time limit; a greedy pass answers if CBC fails.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pulp
from pydantic import Field

from service.runtime.budget import BudgetTracker
from service.runtime.engine import Engine
from strategies.base import Result, Task, parse_params
from strategies.rebase import rebase_plan
from strategies.semantic import average_linkage_clusters, embed_async
from strategies.tree import (
    Allocation,
    Node,
    Search,
    SearchTree,
    TreeParams,
    run_search,
    softmax_allocation,
)
from verifiers.base import Verifier

logger = logging.getLogger(__name__)


class ETSParams(TreeParams):
    temperature: float = Field(0.2, gt=0, le=10, description="T of REBASE's softmax over scores.")
    lambda_b: float = Field(
        1.0, ge=0, le=100, description="Weight of the KV cost (tokens kept / all tokens)."
    )
    # Calibrated on the train split (two-digit addition with seed 20260, GSM8K train) by
    # `loadtests/ets_calibration.py` at width 8 with the judge verifier; the ETS paper's defaults were
    # lambda_s 1.4 and cut 0.05. With all-MiniLM-L6-v2 no two sibling steps fell within 0.05, so every step was
    # its own cluster, coverage paid for keeping every node and ETS equalled REBASE. Only 2% of sibling pairs
    # fall under 0.05 (near-verbatim copies); reworded steps sit at 0.1-0.3, hence the cut 0.3 (MiniLM mostly
    # ignores numbers, so it also merges "51 + 53 = 155" with "51 + 53 equals 175"). Coverage bought no
    # accuracy on train (judge: 0/12 for every config) and cost KV (ratio to REBASE 0.90 at lambda_s 0, 0.94 at
    # 0.5, 0.96 at 1.4), hence lambda_s 0: turn it on per request where embeddings separate the steps.
    lambda_s: float = Field(0.0, ge=0, le=100, description="Weight of semantic coverage (clusters kept / K).")
    cluster_threshold: float = Field(
        0.3, ge=0, le=2, description="Cosine distance at which the average-linkage clustering stops merging."
    )
    token_weighted: bool = Field(True, description="Cost nodes by tokens (false: ETS's uniform node cost).")
    solver_seconds: float = Field(1.0, gt=0, le=30, description="Time limit of one solve; then greedy.")


@dataclass(frozen=True)
class Selection:
    """One depth's pruning problem. Candidate i has weight O_i, own cost, ancestors (ids) and a cluster."""

    weights: Sequence[float]
    costs: Sequence[float]
    ancestors: Sequence[tuple[int, ...]]
    ancestor_costs: dict[int, float]
    clusters: Sequence[int]
    width: int
    lambda_b: float
    lambda_s: float

    @property
    def total_cost(self) -> float:
        total = sum(self.costs) + sum(self.ancestor_costs.values())
        return total if total > 0 else 1.0

    @property
    def cluster_count(self) -> int:
        return max(len(set(self.clusters)), 1)

    def objective(self, keep: Sequence[bool]) -> float:
        """The program's objective for a choice of candidates (ancestors and clusters follow from it)."""
        kept = [index for index, flag in enumerate(keep) if flag]
        kept_ancestors = {ancestor for index in kept for ancestor in self.ancestors[index]}
        cost = sum(self.costs[index] for index in kept) + sum(self.ancestor_costs[j] for j in kept_ancestors)
        covered = len({self.clusters[index] for index in kept})
        return (
            sum(self.weights[index] for index in kept)
            - self.lambda_b * cost / self.total_cost
            + self.lambda_s * covered / self.cluster_count
        )


def solve_lp(problem: Selection, seconds: float) -> list[bool] | None:
    """CBC's optimum (or best found within the limit); None when it has no feasible answer."""
    count = len(problem.weights)
    lp = pulp.LpProblem("ets_prune", pulp.LpMaximize)
    x = [pulp.LpVariable(f"x{index}", cat="Binary") for index in range(count)]
    y = {j: pulp.LpVariable(f"y{j}", cat="Binary") for j in problem.ancestor_costs}
    labels = sorted(set(problem.clusters))
    z = {label: pulp.LpVariable(f"z{label}", cat="Binary") for label in labels}
    scale = problem.lambda_b / problem.total_cost
    lp += (
        pulp.lpSum(problem.weights[index] * x[index] for index in range(count))
        - scale * pulp.lpSum(problem.costs[index] * x[index] for index in range(count))
        - scale * pulp.lpSum(problem.ancestor_costs[j] * y[j] for j in y)
        + (problem.lambda_s / problem.cluster_count) * pulp.lpSum(z.values())
    )
    for j, variable in y.items():
        under = [x[index] for index in range(count) if j in problem.ancestors[index]]
        lp += variable <= pulp.lpSum(under)
        for child in under:
            lp += variable >= child
    for label, variable in z.items():
        lp += variable <= pulp.lpSum(x[index] for index in range(count) if problem.clusters[index] == label)
    lp += pulp.lpSum(x) >= 1
    lp += pulp.lpSum(x) <= max(problem.width, 1)
    lp.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=max(1, math.ceil(seconds))))
    keep = [(variable.value() or 0.0) > 0.5 for variable in x]
    if not any(keep) or sum(keep) > max(problem.width, 1):
        return None
    return keep


def solve_greedy(problem: Selection) -> list[bool]:
    """Start from the best single candidate by objective, add whichever candidate raises the objective most,
    stop when none does or the width is reached."""
    count = len(problem.weights)
    keep = [False] * count
    if count == 0:
        return keep

    def alone(index: int) -> float:
        return problem.objective([position == index for position in range(count)])

    keep[max(range(count), key=alone)] = True
    while sum(keep) < problem.width:
        current = problem.objective(keep)
        best_gain, best_index = 0.0, -1
        for index in range(count):
            if keep[index]:
                continue
            keep[index] = True
            gain = problem.objective(keep) - current
            keep[index] = False
            if gain > best_gain + 1e-12:
                best_gain, best_index = gain, index
        if best_index < 0:
            break
        keep[best_index] = True
    return keep


async def choose(problem: Selection, seconds: float) -> tuple[list[bool], float, bool]:
    """(kept flags, solve seconds, fell back to greedy): the solve runs in a thread and is abandoned at the
    time limit, so one slow program never stalls the request."""
    started = time.monotonic()
    try:
        keep = await asyncio.wait_for(asyncio.to_thread(solve_lp, problem, seconds), timeout=seconds + 0.5)
    except Exception as exc:  # a timeout or any solver failure: the greedy answer is good enough
        logger.warning("ETS selection fell back to greedy: %r", exc)
        keep = None
    if keep is None:
        greedy = await asyncio.to_thread(solve_greedy, problem)  # O(width * k^2) objective evaluations
        return greedy, time.monotonic() - started, True
    return keep, time.monotonic() - started, False


def build_selection(
    tree: SearchTree, candidates: list[Node], clusters: list[int], width: int, params: ETSParams
) -> Selection:
    weights = softmax_allocation([node.score for node in candidates], width, params.temperature)
    total = sum(weights) or 1
    ancestors: list[tuple[int, ...]] = []
    ancestor_costs: dict[int, float] = {}
    for node in candidates:
        path = tree.path(node)[:-1]
        ancestors.append(tuple(step.id for step in path))
        for step in path:
            ancestor_costs[step.id] = float(step.tokens) if params.token_weighted else 1.0
    costs = [float(node.tokens) if params.token_weighted else 1.0 for node in candidates]
    return Selection(
        weights=[weight / total for weight in weights],
        costs=costs,
        ancestors=ancestors,
        ancestor_costs=ancestor_costs,
        clusters=clusters,
        width=width,
        lambda_b=params.lambda_b,
        lambda_s=params.lambda_s,
    )


async def run(task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker) -> Result:
    params = parse_params(ETSParams, task.params)

    async def plan(search: Search, open_nodes: list[Node], finished: list[Node]) -> Allocation:
        width = params.width - len(finished)
        if width <= 0:
            return []
        if len(open_nodes) == 1:
            return [(open_nodes[0], width)]
        vectors = await embed_async([node.text for node in open_nodes])

        def selection() -> Selection:  # clustering is O(k^3): a worker thread, never the event loop
            clusters = average_linkage_clusters(vectors, params.cluster_threshold)
            return build_selection(search.tree, open_nodes, clusters, width, params)

        problem = await asyncio.to_thread(selection)
        keep, seconds, fell_back = await choose(problem, params.solver_seconds)
        search.stats.lp_seconds.append(seconds)
        search.stats.lp_fallbacks += int(fell_back)
        kept = [node for node, flag in zip(open_nodes, keep, strict=True) if flag]
        return rebase_plan(kept, width, params.temperature)

    return await run_search(task, engine, verifier, budget, "ets", params, plan)

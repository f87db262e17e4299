"""REBASE (reward-balanced search): every depth, the width left is split over all frontier nodes by a
softmax of their verifier scores with temperature T, best first; low-scored nodes get no children."""

from __future__ import annotations

from pydantic import Field

from service.runtime.budget import BudgetTracker
from service.runtime.engine import Engine
from strategies.base import Result, Task, parse_params
from strategies.tree import Allocation, Node, Search, TreeParams, run_search, softmax_allocation
from verifiers.base import Verifier


class RebaseParams(TreeParams):
    temperature: float = Field(0.2, gt=0, le=10, description="T of the softmax over scores.")


def rebase_plan(open_nodes: list[Node], width: int, temperature: float) -> Allocation:
    counts = softmax_allocation([node.score for node in open_nodes], width, temperature)
    return [(node, count) for node, count in zip(open_nodes, counts, strict=True) if count > 0]


async def run(task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker) -> Result:
    params = parse_params(RebaseParams, task.params)

    async def plan(search: Search, open_nodes: list[Node], finished: list[Node]) -> Allocation:
        return rebase_plan(open_nodes, params.width - len(finished), params.temperature)

    return await run_search(task, engine, verifier, budget, "rebase", params, plan)

"""Step-level beam search: N candidates, keep the top N/M by verifier score, expand each with M steps.

Snell et al.'s beam search (search-and-learn): the width N counts leaves, so finished solutions leave the
beam and the next depth grows only N minus the finished ones.
"""

from __future__ import annotations

import math

from pydantic import Field

from service.runtime.budget import BudgetTracker
from service.runtime.engine import Engine
from strategies.base import Result, Task, parse_params
from strategies.tree import Allocation, Node, Search, TreeParams, run_search, split_evenly
from verifiers.base import Verifier


class BeamSearchParams(TreeParams):
    beam_width: int = Field(4, ge=1, le=64, description="M: continuations per kept node.")


async def run(task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker) -> Result:
    params = parse_params(BeamSearchParams, task.params)

    async def plan(search: Search, open_nodes: list[Node], finished: list[Node]) -> Allocation:
        left = params.width - len(finished)
        if left <= 0:
            return []
        keep = sorted(open_nodes, key=lambda node: node.score, reverse=True)
        keep = keep[: max(1, math.ceil(left / params.beam_width))]
        return list(zip(keep, split_evenly(left, len(keep)), strict=True))

    return await run_search(task, engine, verifier, budget, "beam_search", params, plan)

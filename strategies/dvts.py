"""Diverse verifier tree search (search-and-learn's DVTS): N/M independent subtrees, each a greedy beam of
width M. Each subtree keeps only its best step per depth and expands it with M continuations; a subtree ends
when its best step is a finished solution. Independence keeps the leaves diverse where one beam would
collapse onto a single line of reasoning.
"""

from __future__ import annotations

from pydantic import Field

from service.runtime.budget import BudgetTracker
from service.runtime.engine import Engine
from strategies.base import Result, Task, parse_params
from strategies.tree import Allocation, Node, Search, TreeParams, run_search
from verifiers.base import Verifier


class DVTSParams(TreeParams):
    beam_width: int = Field(
        4, ge=1, le=64, description="M: width of each subtree; there are width/M subtrees."
    )


def assign_groups(nodes: list[Node], beam_width: int) -> None:
    """The root's children, in order, form the subtrees: M consecutive children per subtree."""
    for index, node in enumerate(nodes):
        node.group = index // beam_width


async def run(task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker) -> Result:
    params = parse_params(DVTSParams, task.params)
    subtrees = max(1, params.width // params.beam_width)

    async def plan(search: Search, open_nodes: list[Node], finished: list[Node]) -> Allocation:
        root = search.tree.root
        depth = open_nodes[0].depth
        if depth == 1:
            assign_groups([node for node in search.tree.nodes if node.parent is root], params.beam_width)
        this_depth = open_nodes + [node for node in finished if node.depth == depth]
        allocation: Allocation = []
        for group in sorted({node.group for node in this_depth}):
            members = [node for node in this_depth if node.group == group]
            best = max(members, key=lambda node: (node.score, not node.finished))
            if not best.finished:
                allocation.append((best, params.beam_width))
        return allocation

    return await run_search(
        task, engine, verifier, budget, "dvts", params, plan, root_children=subtrees * params.beam_width
    )

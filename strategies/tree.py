"""Step-level tree search shared by beam search, DVTS, REBASE and ETS.

A node is one reasoning step: the tokens the model wrote after its parent until the step delimiter (a blank
line by default, used as a stop string), an answer marker, or EOS. A node is continued from its exact token
sequence (prompt ids + the ids of every step on its path), so sibling branches share their prefix token for
token in vLLM's prefix cache. Every frontier node of a depth is expanded in one `gather_or_cancel` (a TaskGroup), one engine
call per node with `n` = its child count.

Strategies differ only in their `Planner`: given the scored children of a depth, which nodes to continue and
with how many children each. The driver here does the rest: budgets as hard caps, KV accounting (distinct
tokens of the live tree, prompt included), progress events, and the final weighted vote over the leaves.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.runtime.budget import BudgetTracker
from service.runtime.concurrency import gather_or_cancel
from service.runtime.cost import decode_eflops, prefill_eflops
from service.runtime.engine import Engine, Generation, Sample
from service.runtime.errors import BudgetExhausted, InvalidRequest
from strategies.base import Candidate, Result, Task
from strategies.selection import select
from verifiers.answers import extract_answer
from verifiers.base import Verifier

# A step that states its final answer ends the solution even when the model goes on.
ANSWER_MARKER = re.compile(r"####|final answer is|\\boxed\{", re.IGNORECASE)


class TreeParams(BaseModel):
    """What every tree search takes; strategies add their own fields."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(8, ge=1, le=256, description="Leaves to grow: children generated per depth in total.")
    max_depth: int = Field(8, ge=1, le=40, description="Most steps per solution.")
    step_tokens: int = Field(64, ge=4, le=4096, description="Longest single step, in tokens.")
    delimiter: str = Field("\n\n", min_length=1, max_length=16, description="Text that ends a step.")


@dataclass(eq=False)
class Node:
    """One reasoning step. The root is the prompt (no tokens of its own)."""

    id: int
    parent: Node | None
    token_ids: list[int]
    text: str
    depth: int
    score: float = 0.0
    finished: bool = False
    finish_reason: str | None = None
    group: int = 0

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


class SearchTree:
    """The nodes of one search and the token counts behind its KV accounting."""

    def __init__(self, prompt_ids: list[int]) -> None:
        self.prompt_ids = prompt_ids
        self.root = Node(0, None, [], "", 0)
        self.nodes: list[Node] = [self.root]

    def add(self, parent: Node, token_ids: list[int], text: str, **fields: Any) -> Node:
        node = Node(len(self.nodes), parent, token_ids, text, parent.depth + 1, group=parent.group, **fields)
        self.nodes.append(node)
        return node

    @staticmethod
    def path(node: Node) -> list[Node]:
        """The steps from the first to `node` (the root excluded)."""
        steps: list[Node] = []
        current: Node | None = node
        while current is not None and current.parent is not None:
            steps.append(current)
            current = current.parent
        return steps[::-1]

    def sequence(self, node: Node) -> list[int]:
        """Exactly what the engine continues: prompt ids, then every step's ids."""
        ids = list(self.prompt_ids)
        for step in self.path(node):
            ids.extend(step.token_ids)
        return ids

    def solution_text(self, node: Node) -> str:
        return "".join(step.text for step in self.path(node))

    def solution_tokens(self, node: Node) -> int:
        return sum(step.tokens for step in self.path(node))

    def live_tokens(self, nodes: Iterable[Node]) -> int:
        """Distinct tokens held by the tree that keeps `nodes` alive: the prompt once, plus every distinct
        node on their paths once (shared ancestors are shared KV)."""
        seen: set[int] = set()
        total = len(self.prompt_ids)
        for node in nodes:
            for step in self.path(node):
                if step.id not in seen:
                    seen.add(step.id)
                    total += step.tokens
        return total


@dataclass
class SearchStats:
    """Per-search accounting that goes into `Result.details`."""

    depths: list[dict[str, Any]] = field(default_factory=list)
    kv_tokens: list[int] = field(default_factory=list)
    lp_seconds: list[float] = field(default_factory=list)
    lp_fallbacks: int = 0
    step_seconds: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    tree_eflops: float = 0.0
    stopped: str = "done"

    def details(self) -> dict[str, Any]:
        kv = self.kv_tokens
        return {
            "depth": len(self.depths),
            "stopped": self.stopped,
            "avg_kv_tokens": sum(kv) / len(kv) if kv else 0.0,
            "peak_kv_tokens": max(kv, default=0),
            "search_prompt_tokens": self.prompt_tokens,
            "search_cached_prompt_tokens": self.cached_prompt_tokens,
            "prefix_cache_hit_rate": (
                self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
            ),
            "tree_eflops": self.tree_eflops,
            "step_seconds": [round(seconds, 4) for seconds in self.step_seconds],
            "lp_seconds": [round(seconds, 5) for seconds in self.lp_seconds],
            "lp_fallbacks": self.lp_fallbacks,
            "depths": self.depths,
        }


@dataclass
class Search:
    """One running search: the request's task, engine, verifier and budget, plus its tree and stats."""

    task: Task
    engine: Engine
    verifier: Verifier
    budget: BudgetTracker
    params: TreeParams
    tree: SearchTree
    stats: SearchStats = field(default_factory=SearchStats)


# A planner gets the search, the unfinished children of this depth and every leaf finished so far, and
# returns which nodes to continue with how many children each (an empty list ends the search).
Allocation = list[tuple[Node, int]]
Planner = Callable[[Search, list[Node], list[Node]], Awaitable[Allocation]]


def step_finished(sample: Sample, delimiter: str, solution_tokens: int, max_tokens: int) -> bool:
    """A step ends its solution at EOS (or a request stop string), an answer marker, the solution's token
    cap, or an abort; a step that stopped at the delimiter, or at the step cap, continues."""
    if sample.finish_reason not in ("stop", "length") or solution_tokens >= max_tokens:
        return True
    if ANSWER_MARKER.search(sample.text):
        return True
    return sample.finish_reason == "stop" and not sample.text.endswith(delimiter)


async def expand(search: Search, allocation: Allocation) -> list[Node]:
    """Generate the children of every allocated node at once (one engine call per node), then score them all
    in one verifier call. Calls the budget cannot pay for are skipped; raises BudgetExhausted only when
    none could be paid for."""
    task, tree, params = search.task, search.tree, search.params
    max_tokens = task.sampling.max_tokens

    async def grow(node: Node, count: int) -> tuple[Node, Generation | None, int]:
        sequence = tree.sequence(node)
        so_far = tree.solution_tokens(node)
        # vLLM's guided decoding starts its grammar at the first generated token and cannot resume inside an
        # answer, so a structured request grows whole answers (one step each): every leaf is then constrained.
        whole = task.sampling.structured is not None
        step_cap = min(
            max_tokens - so_far if whole else params.step_tokens,
            max_tokens - so_far,
            search.engine.max_model_len - len(sequence),
        )
        if step_cap <= 0:
            return node, None, len(sequence)
        spec = dataclasses.replace(
            task.sampling,
            n=count,
            max_tokens=step_cap,
            stop=task.sampling.stop if whole else (params.delimiter, *task.sampling.stop),
            include_stop_str_in_output=not whole,
        )
        try:
            generation = await search.budget.generate(
                search.engine, sequence, spec, purpose="sample", prompt_tokens=len(sequence)
            )
        except BudgetExhausted:
            return node, None, len(sequence)
        return node, generation, len(sequence)

    started = time.monotonic()
    results = await gather_or_cancel(*(grow(node, count) for node, count in allocation if count > 0))
    search.stats.step_seconds.append(time.monotonic() - started)
    if all(generation is None for _, generation, _ in results):
        raise BudgetExhausted("The budget left cannot pay for another search step.", param="budget")

    budget, stats = search.budget, search.stats
    children: list[Node] = []
    for parent, generation, sequence_tokens in results:
        if generation is None:
            continue
        stats.prompt_tokens += generation.prompt_tokens
        stats.cached_prompt_tokens += generation.cached_prompt_tokens
        lengths = [sample.tokens for sample in generation.samples]
        if parent is tree.root:  # the prompt's KV is computed once for the whole tree
            stats.tree_eflops += prefill_eflops(budget.shape, budget.hardware, sequence_tokens)
        if lengths:
            stats.tree_eflops += decode_eflops(
                budget.shape,
                budget.hardware,
                sequence_tokens,
                sum(lengths) / len(lengths),
                len(lengths),
                budget.count_weight_loading,
            )
        so_far = tree.solution_tokens(parent)
        for sample in generation.samples:
            if not sample.token_ids:
                continue
            finished = step_finished(sample, params.delimiter, so_far + sample.tokens, max_tokens) or (
                sequence_tokens + sample.tokens >= search.engine.max_model_len
            )
            children.append(
                tree.add(
                    parent,
                    list(sample.token_ids),
                    sample.text,
                    finished=finished,
                    finish_reason=sample.finish_reason,
                    score=parent.score,
                )
            )
    await score(search, children)
    return children


async def score(search: Search, nodes: list[Node]) -> None:
    """The verifier's score of each node's whole partial solution (process verifiers read its last step).
    When the budget cannot pay for scoring, nodes keep their parent's score."""
    if not nodes or search.budget.expired():
        return
    texts = [search.tree.solution_text(node) for node in nodes]
    try:
        scores = await search.verifier.score(search.task.question, texts)
    except BudgetExhausted:
        return
    for node, value in zip(nodes, scores, strict=False):
        node.score = float(value)


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` children over `parts` nodes, as evenly as possible, larger shares first."""
    if parts <= 0:
        return []
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


def softmax_allocation(scores: list[float], width: int, temperature: float) -> list[int]:
    """REBASE's width split, in the order of `scores`: visit nodes best first, give each
    n_i = ceil(W * exp(s_i/T) / sum of exp(s/T) over the nodes not yet visited), W -= n_i, until W is 0."""
    counts = [0] * len(scores)
    if not scores or width <= 0:
        return counts
    order = sorted(range(len(scores)), key=lambda index: scores[index], reverse=True)
    top = scores[order[0]]
    weights = [math.exp((scores[index] - top) / temperature) for index in order]
    remaining_weight = sum(weights)
    left = width
    for position, index in enumerate(order):
        if left <= 0:
            break
        share = weights[position] / remaining_weight if remaining_weight > 0 else 1.0
        counts[index] = min(left, math.ceil(left * share - 1e-9))
        left -= counts[index]
        remaining_weight -= weights[position]
    return counts


def require_verifier(verifier: Verifier | None, strategy: str) -> Verifier:
    if verifier is None:
        raise InvalidRequest(
            f"{strategy} scores every step: give a verifier (e.g. {{'name': 'judge'}}).", param="verifier"
        )
    return verifier


async def run_search(
    task: Task,
    engine: Engine,
    verifier: Verifier | None,
    budget: BudgetTracker,
    strategy: str,
    params: TreeParams,
    plan: Planner,
    root_children: int | None = None,
) -> Result:
    """Grow the tree depth by depth with `plan` until every leaf is finished, the planner stops, the depth
    cap, or the budget (then answer from what is there), and choose by weighted vote over the leaves.
    The root gets `root_children` first steps (the width by default); `plan` sees only depths >= 1."""
    checked = require_verifier(verifier, strategy)
    tree = SearchTree(engine.encode(task.prompt))
    search = Search(task, engine, checked, budget, params, tree)
    stats = search.stats
    finished: list[Node] = []
    frontier: list[Node] = []
    allocation: Allocation = [(tree.root, params.width if root_children is None else root_children)]
    for depth in range(1, params.max_depth + 1):
        if budget.expired():
            stats.stopped = "deadline"
            break
        try:
            children = await expand(search, allocation)
        except BudgetExhausted:
            if depth == 1:
                raise
            stats.stopped = "budget"
            break
        live = tree.live_tokens(children)
        stats.kv_tokens.append(live)
        budget.observe_kv(live)
        finished.extend(child for child in children if child.finished)
        frontier = [child for child in children if not child.finished]
        aborted = any(child.finish_reason == "abort" for child in children)
        last = aborted or depth == params.max_depth or not frontier
        allocation = [] if last else await plan(search, frontier, finished)
        kept = [node for node, count in allocation if count > 0]
        entry = {
            "depth": depth,
            "frontier": len(frontier),
            "finished": len(finished),
            "kept": len(kept),
            "children": sum(count for _, count in allocation),
            "best_score": max((child.score for child in children), default=0.0),
            "kv_tokens": live,
            "tokens": budget.spend.completion_tokens,
            "step_seconds": round(stats.step_seconds[-1], 4) if stats.step_seconds else 0.0,
        }
        stats.depths.append(entry)
        task.report({"event": "depth", "strategy": strategy, **entry})
        if not allocation:
            stats.stopped = "deadline" if aborted else "max_depth" if frontier and last else "done"
            break
    leaves = finished or frontier
    candidates = [
        Candidate(
            text=tree.solution_text(node),
            answer=extract_answer(tree.solution_text(node), task.answer),
            tokens=tree.solution_tokens(node),
            finish_reason=node.finish_reason if node.finished else "length",  # cut off by the search
            score=node.score,
        )
        for node in leaves
    ]
    chosen = select(candidates, "weighted")
    used = {**params.model_dump(), "selection": "weighted", "leaves": len(candidates)}
    return Result(
        text=chosen.text if chosen else "",
        answer=chosen.answer if chosen else None,
        candidates=candidates,
        params=used,
        abstained=chosen is None,
        details={"strategy": strategy, "nodes": len(tree.nodes) - 1, **stats.details()},
    )

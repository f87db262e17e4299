"""The strategy registry: name -> `async def run(task, engine, verifier, budget) -> Result`."""

from __future__ import annotations

from typing import Any

from service.runtime.budget import BudgetTracker
from service.runtime.engine import Engine
from service.runtime.errors import InvalidRequest
from strategies import allocator, beam_search, best_of_n, deepconf, dvts, ets, none, rag, rebase, revision
from strategies.base import Result, Strategy, Task, settle_empty
from verifiers.answers import AnswerType
from verifiers.base import Verifier

STRATEGIES: dict[str, Strategy] = {
    "auto": allocator.run,  # picks one of the others per prompt (strategies/allocation)
    "none": none.run,
    "best_of_n": best_of_n.run,
    "deepconf": deepconf.run,  # best-of-N gated by token confidence, stopping weak traces in the engine
    "revision": revision.run,
    "rag": rag.run,
    "drag": rag.run_drag,
    "iterdrag": rag.run_iterdrag,
    # Step-level tree searches (strategies/tree.py): each needs a verifier.
    "beam_search": beam_search.run,
    "dvts": dvts.run,
    "rebase": rebase.run,
    "ets": ets.run,
}

# Per-strategy defaults for what a request leaves unset (the API applies them): only where a measurement says
# the strategy does better than the service-wide defaults (temperature 0.8, 256 tokens, numeric answers).
# RAG: every configuration in loadtests/rag.py was measured greedy with 32 tokens, and its answers are names.
SAMPLING_DEFAULTS: dict[str, dict[str, Any]] = {
    "rag": rag.SAMPLING_DEFAULTS,
    "drag": rag.SAMPLING_DEFAULTS,
    "iterdrag": rag.SAMPLING_DEFAULTS,
}
ANSWER_DEFAULTS: dict[str, AnswerType] = {"rag": "text", "drag": "text", "iterdrag": "text"}


def defaults_name(name: str, has_corpus: bool) -> str:
    """Whose defaults apply: `auto` with a corpus runs `rag`."""
    return "rag" if name == "auto" and has_corpus else name


def sampling_defaults(name: str, has_corpus: bool) -> dict[str, Any]:
    return dict(SAMPLING_DEFAULTS.get(defaults_name(name, has_corpus), {}))


def answer_default(name: str, has_corpus: bool) -> AnswerType | None:
    return ANSWER_DEFAULTS.get(defaults_name(name, has_corpus))


def get_strategy(name: str) -> Strategy:
    """The strategy `name`, wrapped in the empty-answer rule (strategies.base.settle_empty)."""
    try:
        strategy = STRATEGIES[name]
    except KeyError:
        raise InvalidRequest(
            f"Unknown strategy {name!r}; the strategies are: {', '.join(sorted(STRATEGIES))}.",
            param="strategy",
        ) from None

    async def settled(task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker) -> Result:
        return settle_empty(await strategy(task, engine, verifier, budget))

    return settled

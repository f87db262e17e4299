"""The strategy registry: name -> `async def run(task, engine, verifier, budget) -> Result`."""

from __future__ import annotations

from service.runtime.errors import InvalidRequest
from strategies import allocator, beam_search, best_of_n, dvts, ets, none, rag, rebase, revision
from strategies.base import Strategy

STRATEGIES: dict[str, Strategy] = {
    "auto": allocator.run,  # picks one of the others per prompt (strategies/allocation)
    "none": none.run,
    "best_of_n": best_of_n.run,
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


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InvalidRequest(
            f"Unknown strategy {name!r}; the strategies are: {', '.join(sorted(STRATEGIES))}.",
            param="strategy",
        ) from None

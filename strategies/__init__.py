"""The strategy registry: name -> `async def run(task, engine, verifier, budget) -> Result`."""

from __future__ import annotations

from service.errors import InvalidRequest
from strategies import beam_search, best_of_n, dvts, ets, none, rebase
from strategies.base import Strategy

STRATEGIES: dict[str, Strategy] = {
    "none": none.run,
    "best_of_n": best_of_n.run,
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

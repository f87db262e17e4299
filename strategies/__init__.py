"""The strategy registry: name -> `async def run(task, engine, verifier, budget) -> Result`."""

from __future__ import annotations

from service.errors import InvalidRequest
from strategies import best_of_n, none
from strategies.base import Strategy

STRATEGIES: dict[str, Strategy] = {
    "none": none.run,
    "best_of_n": best_of_n.run,
}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InvalidRequest(
            f"Unknown strategy {name!r}; the strategies are: {', '.join(sorted(STRATEGIES))}.",
            param="strategy",
        ) from None

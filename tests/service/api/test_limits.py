"""limits_of: every request ends up with a token cap and a seconds cap, and a key's ceiling narrows each axis."""

from __future__ import annotations

from service.api.protocol import BudgetSpec
from service.api.solver import limits_of
from service.runtime.budget import BudgetLimits
from service.runtime.settings import Settings


def test_eflops_alone_still_gets_the_default_token_and_seconds_caps() -> None:
    settings = Settings(default_budget_tokens=777, default_budget_seconds=12.0)
    limits, given = limits_of(BudgetSpec(eflops=1e24), settings)
    assert given
    assert limits.eflops == 1e24
    assert limits.tokens == 777
    assert limits.seconds == 12.0


def test_no_budget_gets_a_seconds_cap() -> None:
    settings = Settings(default_budget_tokens=100, default_budget_seconds=9.0)
    limits, given = limits_of(None, settings)
    assert not given
    assert (limits.tokens, limits.seconds) == (100, 9.0)


def test_ceiling_narrows_every_axis_and_cannot_be_widened() -> None:
    settings = Settings()
    ceiling = BudgetLimits(tokens=50, eflops=2.0, seconds=3.0, context_tokens=400)
    limits, _ = limits_of(
        BudgetSpec(tokens=10_000, eflops=1e9, seconds=100.0, context_tokens=100_000), settings, ceiling
    )
    assert limits == ceiling
    smaller, _ = limits_of(BudgetSpec(tokens=20, seconds=1.0), settings, ceiling)
    assert (smaller.tokens, smaller.eflops, smaller.seconds, smaller.context_tokens) == (20, 2.0, 1.0, 400)
    unnamed, _ = limits_of(None, settings, ceiling)
    assert (unnamed.tokens, unnamed.eflops, unnamed.seconds, unnamed.context_tokens) == (50, 2.0, 3.0, 400)

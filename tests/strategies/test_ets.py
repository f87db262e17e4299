"""ETS's pruning program on hand-built trees whose optimum is known, then through the real service."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest

from strategies import ets
from strategies.ets import Selection, choose, solve_greedy, solve_lp


def problem(**overrides: object) -> Selection:
    # A is best but sits under a long private ancestor (200 tokens); B and C share a 10-token one.
    values: dict[str, object] = {
        "weights": [0.5, 0.25, 0.25],
        "costs": [10.0, 10.0, 10.0],
        "ancestors": [(1,), (2,), (2,)],
        "ancestor_costs": {1: 200.0, 2: 10.0},
        "clusters": [0, 0, 0],
        "width": 3,
        "lambda_b": 1.0,
        "lambda_s": 0.0,
    }
    values.update(overrides)
    return Selection(**values)  # type: ignore[arg-type]


def test_token_weights_change_which_nodes_are_kept() -> None:
    weighted = problem()
    # Uniform cost (ETS's own): A alone is best (0.5 - 2/5); by tokens A's ancestor costs 210/240 of the tree.
    uniform = problem(costs=[1.0, 1.0, 1.0], ancestor_costs={1: 1.0, 2: 1.0})
    assert solve_lp(uniform, 5) == [True, False, False]
    assert solve_lp(weighted, 5) == [False, True, True]
    assert solve_greedy(weighted) == [False, True, True]


def test_coverage_keeps_a_lone_cluster_alive() -> None:
    base = {
        "weights": [0.5, 0.4, 0.1],
        "ancestors": [(), (), ()],
        "ancestor_costs": {},
        "clusters": [0, 0, 1],
    }
    assert solve_lp(problem(**base, lambda_s=0.0), 5) == [True, True, False]
    assert solve_lp(problem(**base, lambda_s=1.4), 5) == [True, True, True]
    assert solve_lp(problem(**base, lambda_s=1.4, width=2), 5) == [True, False, True]


def test_lp_finds_the_brute_force_optimum() -> None:
    rng = random.Random(7)
    for _ in range(6):
        count = 6
        ancestors = [tuple(sorted(rng.sample(range(1, 5), rng.randint(0, 2)))) for _ in range(count)]
        case = Selection(
            weights=[rng.random() for _ in range(count)],
            costs=[float(rng.randint(1, 60)) for _ in range(count)],
            ancestors=ancestors,
            ancestor_costs={j: float(rng.randint(1, 200)) for j in range(1, 5)},
            clusters=[rng.randint(0, 2) for _ in range(count)],
            width=4,
            lambda_b=1.0,
            lambda_s=1.4,
        )
        best = max(
            case.objective(keep)
            for keep in itertools.product([False, True], repeat=count)
            if 1 <= sum(keep) <= case.width
        )
        found = solve_lp(case, 5)
        assert found is not None
        assert case.objective(found) == pytest.approx(best, abs=1e-6)
        assert case.objective(solve_greedy(case)) <= best + 1e-9


def test_choose_reports_the_solve_time() -> None:
    keep, seconds, fell_back = asyncio.run(choose(problem(), 2.0))
    assert keep == [False, True, True]
    assert not fell_back
    assert 0 < seconds < 2.5


def test_a_failing_or_slow_solver_falls_back_to_greedy(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(problem: Selection, seconds: float) -> list[bool] | None:
        raise RuntimeError("cbc crashed")

    def slow(problem: Selection, seconds: float) -> list[bool] | None:
        time.sleep(1.5)
        return [True, True, True]

    monkeypatch.setattr(ets, "solve_lp", broken)
    keep, _, fell_back = asyncio.run(choose(problem(), 1.0))
    assert fell_back and keep == solve_greedy(problem()) == [False, True, True]
    monkeypatch.setattr(ets, "solve_lp", slow)
    started = time.monotonic()
    keep, seconds, fell_back = asyncio.run(choose(problem(), 0.1))
    assert fell_back and keep == [False, True, True]
    assert seconds < 1.0 and time.monotonic() - started < 3.0

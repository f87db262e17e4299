"""ETS's pruning program on hand-built trees whose optimum is known, then through the real service."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import numpy as np
import pytest

from strategies import ets
from strategies.ets import Selection, choose, solve_greedy, solve_lp
from strategies.semantic import average_linkage_clusters, cosine_distances


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


def naive_average_linkage(vectors: np.ndarray, threshold: float) -> list[int]:
    """The definition, slowly: merge the pair of clusters with the smallest mean pairwise distance."""
    distances = cosine_distances(vectors)
    clusters = [[index] for index in range(len(vectors))]
    while len(clusters) > 1:
        pairs = [(a, b) for a in range(len(clusters)) for b in range(a + 1, len(clusters))]
        means = [float(distances[np.ix_(clusters[a], clusters[b])].mean()) for a, b in pairs]
        best = int(np.argmin(means))
        if means[best] > threshold:
            break
        a, b = pairs[best]
        clusters[a] += clusters.pop(b)
    labels = [0] * len(vectors)
    for label, group in enumerate(sorted(clusters, key=min)):
        for member in group:
            labels[member] = label
    return labels


def test_clustering_matches_the_definition_and_is_fast_at_full_width() -> None:
    rng = np.random.default_rng(0)
    for _ in range(10):
        centers = rng.normal(size=(5, 16))
        vectors = centers[rng.integers(0, 5, 24)] + rng.normal(scale=0.15, size=(24, 16))
        for threshold in (0.02, 0.05, 0.2):
            assert average_linkage_clusters(vectors, threshold) == naive_average_linkage(vectors, threshold)
    started = time.monotonic()
    average_linkage_clusters(rng.normal(size=(256, 384)), 2.0)  # width 256, everything merges
    assert time.monotonic() - started < 1.0

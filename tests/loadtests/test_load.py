"""The load harness: scenario parsing, the arrival process, percentiles and the report, and one short real run
against the real service (a few seconds at two rates) that checks every reported field."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from vllm.benchmarks.serve import get_request

from loadtests.load import (
    Outcome,
    budget_fraction,
    headline,
    main,
    meets_slo,
    percentiles_ms,
    rate_report,
)
from loadtests.scenario import Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "loadtests" / "scenarios"


def scenario(**changes: Any) -> Scenario:
    base: dict[str, Any] = {
        "name": "t",
        "rates": [1.0],
        "duration_seconds": 10,
        "mix": [{"name": "plain"}],
    }
    return Scenario.model_validate(base | changes)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_parses(path: Path) -> None:
    parsed = load_scenario(path)
    assert parsed.mix and parsed.rates and parsed.duration_seconds > 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rates": [0]}, "positive"),
        ({"arrival": "concurrency", "rates": [1.5]}, "whole numbers"),
        ({"mix": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"mix": [{"name": "a", "endpoint": "solve"}]}, "needs a strategy"),
        ({"mix": [{"name": "a", "data": "rag"}]}, "needs endpoint solve"),
        ({"mix": [{"name": "a", "wieght": 2}]}, "wieght"),
        ({"arrival": "uniform"}, "arrival"),
    ],
)
def test_scenario_errors_name_the_problem(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        scenario(**changes)


def test_poisson_arrivals_follow_the_rate() -> None:
    """vLLM's arrival process at 50/s: 100 arrivals take about 2 s, and the gaps are exponential (their
    coefficient of variation is about 1, where evenly spaced arrivals would give 0)."""

    async def arrivals() -> list[float]:
        times = []
        async for _, _ in get_request(list(range(100)), 50.0, 1.0):  # type: ignore[arg-type]
            times.append(time.perf_counter())
        return times

    times = asyncio.run(arrivals())
    span = times[-1] - times[0]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 1.5 < span < 3.0
    assert 0.6 < statistics.stdev(gaps) / statistics.mean(gaps) < 1.5


def test_percentiles_from_the_histogram() -> None:
    values = [i / 1000 for i in range(1, 1001)]  # 1 ms .. 1000 ms
    p = percentiles_ms(values)
    assert p["p50"] == pytest.approx(500, rel=0.01)
    assert p["p90"] == pytest.approx(900, rel=0.01)
    assert p["p99"] == pytest.approx(990, rel=0.01)
    assert percentiles_ms([])["p99"] is None


def test_slo_goodput_and_warmup_in_the_report() -> None:
    plan = scenario(
        warmup_seconds=2,
        slo={"e2e_ms": 1000, "ttft_ms": 100},
        mix=[{"name": "a"}, {"name": "b", "endpoint": "solve", "strategy": "none"}],
    )
    outcomes = [
        Outcome("a", 0.5, "ok", e2e=0.1, ttft=0.01, output_tokens=5, correct=True),  # warm-up: not counted
        Outcome("a", 3.0, "ok", e2e=0.5, ttft=0.05, output_tokens=10, correct=True),  # within SLO
        Outcome("a", 4.0, "ok", e2e=0.5, ttft=0.5, output_tokens=10, correct=True),  # TTFT too slow
        Outcome("b", 5.0, "ok", e2e=2.0, output_tokens=20, eflops=1e9, budget_fraction=0.5, correct=False),
        Outcome("b", 6.0, "rejected", e2e=0.01),
        Outcome("b", 7.0, "error", error="boom"),
    ]
    report = rate_report(plan, 1.0, outcomes, elapsed=12.0)
    every = report["groups"]["all"]
    assert report["window_seconds"] == 10.0
    assert (every["sent"], every["completed"], every["rejected_429"], every["errors"]) == (5, 3, 1, 1)
    assert every["goodput"] == pytest.approx(0.1)
    assert every["correct_within_slo_per_s"] == pytest.approx(0.1)
    assert every["accuracy"] == pytest.approx(2 / 3)
    assert every["output_token_throughput"] == pytest.approx(4.0)
    assert report["groups"]["b"]["eflops_per_request"] == 1e9
    assert report["groups"]["b"]["max_budget_fraction"] == 0.5
    assert every["error_samples"] == ["boom"]
    assert not meets_slo(outcomes[2], plan)
    line = headline([report])
    assert line["peak_goodput"] == pytest.approx(0.1)
    assert line["per_rate"][0]["completed"] == 3


def test_budget_fraction_takes_the_tightest_axis() -> None:
    report = {
        "requested": {"tokens": 100, "eflops": None, "seconds": 10.0},
        "spent": {"tokens": 50, "seconds": 9},
    }
    assert budget_fraction(report) == pytest.approx(0.9)
    assert budget_fraction({"requested": {}, "spent": {}}) is None


@pytest.mark.engine
def test_a_short_real_run_reports_every_field(service_url: str, tmp_path: Path, capsys: Any) -> None:
    plan = tmp_path / "short.toml"
    plan.write_text(
        """
name = "short"
rates = [0.5, 1]
duration_seconds = 4
[slo]
e2e_ms = 60000
ttft_ms = 60000
[[mix]]
name = "none"
endpoint = "chat"
max_tokens = 8
[[mix]]
name = "bon"
endpoint = "solve"
strategy = "best_of_n"
params = { n = 2 }
budget = { tokens = 100, seconds = 60 }
max_tokens = 8
"""
    )
    result = main([str(plan), "--url", service_url, "--out", str(tmp_path / "out")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(result))
    assert [row["rate"] for row in result["per_rate"]] == [0.5, 1.0]
    for row in result["per_rate"]:
        assert row["errors"] == 0 and row["completed"] == row["sent"] > 0
        assert row["rps"] > 0 and row["tok_s"] > 0 and row["e2e_p99_ms"] > 0
        assert row["ttft_p99_ms"] is not None and row["goodput"] > 0
        assert row["accuracy"] is not None and 0 <= row["accuracy"] <= 1
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    groups = saved["reports"][0]["groups"]
    assert set(groups) == {"all", "none", "bon"}
    assert groups["bon"]["eflops_per_request"] > 0
    assert 0 < groups["bon"]["max_budget_fraction"] <= 1
    assert groups["none"]["ttft_ms"]["p50"] is not None
    assert (tmp_path / "out" / "report.csv").read_text().count("\n") == 1 + 2 * 3
    assert (tmp_path / "out" / "plots.png").stat().st_size > 0

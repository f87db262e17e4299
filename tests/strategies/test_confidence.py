"""DeepConf's confidence arithmetic against a hand-worked example (pure logic, no engine).

Five tokens, k = 2, top-2 log-probabilities per position (most likely first):

    t1 [-0.10, -2.30] -> C = (0.10 + 2.30) / 2 = 1.2
    t2 [-0.50, -1.50] -> 1.0   (a third entry -4.0, the sampled token outside the top 2, is not counted)
    t3 [-0.20, -3.80] -> 2.0
    t4 [-1.00, -1.00] -> 1.0
    t5 [-0.05, -5.95] -> 3.0

Windows of 2: (1.2+1.0)/2 = 1.1, 1.5, 1.5, 2.0 -> lowest 1.1; windows of 3: 1.4, 4/3, 2.0 -> lowest 4/3.
Tail of 2: (1.0 + 3.0)/2 = 2.0. Mean: 8.2/5 = 1.64. A window longer than the trace: one group, the mean.
"""

from __future__ import annotations

import pytest

from strategies.confidence import (
    TraceConfidence,
    WindowMonitor,
    bottom_percent_confidence,
    consensus,
    group_confidences,
    keep_threshold,
    keep_top,
    lowest_group_confidence,
    mean_confidence,
    percentile,
    tail_confidence,
    token_confidence,
    weighted_votes,
)

TOPS = [[-0.10, -2.30], [-0.50, -1.50, -4.0], [-0.20, -3.80], [-1.00, -1.00], [-0.05, -5.95]]
CONFIDENCES = [1.2, 1.0, 2.0, 1.0, 3.0]


def test_token_confidence_averages_exactly_the_top_k() -> None:
    assert [token_confidence(top, 2) for top in TOPS] == pytest.approx(CONFIDENCES)
    # order of the entries does not matter; k larger than what was returned averages what there is
    assert token_confidence([-2.3, -0.1], 2) == pytest.approx(1.2)
    assert token_confidence([-0.5, -1.5, -4.0], 3) == pytest.approx(2.0)
    assert token_confidence([], 20) == 0.0
    assert token_confidence([float("-inf"), -0.0], 2) == pytest.approx(50.0)  # floored at -100


def test_group_lowest_bottom_tail_and_mean() -> None:
    assert group_confidences(CONFIDENCES, 2) == pytest.approx([1.1, 1.5, 1.5, 2.0])
    assert group_confidences(CONFIDENCES, 3) == pytest.approx([1.4, 4 / 3, 2.0])
    assert lowest_group_confidence(CONFIDENCES, 2) == pytest.approx(1.1)
    assert lowest_group_confidence(CONFIDENCES, 3) == pytest.approx(4 / 3)
    assert group_confidences(CONFIDENCES, 10) == pytest.approx([1.64])
    # 4 groups: the lowest 10% is at least one group
    assert bottom_percent_confidence(CONFIDENCES, 2) == pytest.approx(1.1)
    assert bottom_percent_confidence(CONFIDENCES, 2, 50) == pytest.approx((1.1 + 1.5) / 2)
    assert tail_confidence(CONFIDENCES, 2) == pytest.approx(2.0)
    assert tail_confidence(CONFIDENCES, 99) == pytest.approx(1.64)
    assert mean_confidence(CONFIDENCES) == pytest.approx(1.64)
    trace = TraceConfidence.of(CONFIDENCES, window=2, tail=2)
    assert (trace.lowest_group, trace.bottom10, trace.tail, trace.mean) == pytest.approx(
        (1.1, 1.1, 2.0, 1.64)
    )
    assert trace.get("tail") == pytest.approx(2.0)


def test_thresholds_are_percentiles_of_the_warmup() -> None:
    warmup = [1.0, 2.0, 3.0, 4.0]
    assert percentile(warmup, 50) == pytest.approx(2.5)
    # keep the top 90% (DeepConf-high): the 10th percentile, 1.0 + 0.3 * (2.0 - 1.0)
    assert keep_threshold(warmup, 90) == pytest.approx(1.3)
    # keep the top 10% (DeepConf-low): the 90th percentile, 3.0 + 0.7 * (4.0 - 3.0)
    assert keep_threshold(warmup, 10) == pytest.approx(3.7)
    assert keep_top(warmup, 50) == [False, False, True, True]
    assert keep_top([2.0], 10) == [True]


def test_weighted_vote_and_consensus() -> None:
    votes = weighted_votes(["4", "4", "5", None], [1.0, 2.0, 2.5, 9.0])
    assert votes == pytest.approx({"4": 3.0, "5": 2.5})
    leader, share = consensus(votes)
    assert leader == "4" and share == pytest.approx(3.0 / 5.5)
    assert consensus({}) == (None, 0.0)


def test_the_window_monitor_stops_on_the_first_weak_full_window() -> None:
    monitor = WindowMonitor(window=2, threshold=1.2)
    assert monitor.push(1.2) is False  # not a full window yet
    assert monitor.push(1.0) is True  # (1.2 + 1.0) / 2 = 1.1 < 1.2
    monitor = WindowMonitor(window=3, threshold=1.3)
    assert [monitor.push(c) for c in CONFIDENCES] == [False, False, False, False, False]
    assert monitor.lowest == pytest.approx(4 / 3)

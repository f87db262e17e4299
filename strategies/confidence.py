"""DeepConf's confidence arithmetic (Fu et al. 2025, "Deep Think with Confidence"), pure and engine-free.

- Token confidence: `C_i = -(1/k) * sum_{j=1..k} log P_i(j)` over the k most likely tokens at position i. A peaked
  distribution leaves little mass to its runners-up, so their log-probabilities are very negative and C_i is high.
- Group confidence: the mean token confidence of a sliding window of `window` consecutive tokens (every start
  position, windows overlap). A trace shorter than its window has one group: all its tokens.
- Lowest group confidence: the minimum group confidence of a trace (its weakest stretch of reasoning).
- Bottom-10% group confidence: the mean of the lowest 10% of its group confidences.
- Tail confidence: the mean token confidence of its last `tail` tokens (where the answer is written).
- Mean confidence: the mean token confidence of the whole trace (self-certainty).

Offline, the top eta% of traces by a confidence survive and vote weighted by it; online, warm-up traces set a
threshold (the (100 - eta)th percentile of their lowest group confidences) and a trace stops as soon as one of
its full windows falls below it.

Where the reference code differs, ours follows the paper: a token's k is exactly the k most likely tokens (vLLM
adds the sampled token as a (k+1)th entry when it is not among them; counting it would lower the confidence of
exactly the tokens sampled from the tail), and group means are not rounded.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Metric = Literal["lowest_group", "bottom10", "tail", "mean"]
METRICS: tuple[Metric, ...] = ("lowest_group", "bottom10", "tail", "mean")

# A log-probability of -inf (a token the model gives no mass) would make one token's confidence infinite;
# vLLM's float32 logits bottom out around here anyway.
LOGPROB_FLOOR = -100.0


def token_confidence(top_logprobs: Sequence[float], k: int) -> float:
    """C_i from the log-probabilities of position i's most likely tokens (the first k, most likely first)."""
    values = sorted(
        (max(value, LOGPROB_FLOOR) for value in top_logprobs if not math.isnan(value)), reverse=True
    )
    chosen = values[:k]
    if not chosen:
        return 0.0
    return -sum(chosen) / len(chosen)


def group_confidences(confidences: Sequence[float], window: int) -> list[float]:
    """The mean of every full sliding window; a trace shorter than the window is one group."""
    if not confidences:
        return []
    if len(confidences) <= window:
        return [sum(confidences) / len(confidences)]
    total = sum(confidences[:window])
    groups = [total / window]
    for end in range(window, len(confidences)):
        total += confidences[end] - confidences[end - window]
        groups.append(total / window)
    return groups


def lowest_group_confidence(confidences: Sequence[float], window: int) -> float:
    return min(group_confidences(confidences, window), default=0.0)


def bottom_percent_confidence(confidences: Sequence[float], window: int, percent: float = 10.0) -> float:
    """The mean of the lowest `percent`% of the group confidences (at least one group)."""
    groups = sorted(group_confidences(confidences, window))
    if not groups:
        return 0.0
    count = max(1, int(len(groups) * percent / 100.0))
    return sum(groups[:count]) / count


def tail_confidence(confidences: Sequence[float], tail: int) -> float:
    tail_part = confidences[-tail:] if tail > 0 else confidences
    return sum(tail_part) / len(tail_part) if tail_part else 0.0


def mean_confidence(confidences: Sequence[float]) -> float:
    return sum(confidences) / len(confidences) if confidences else 0.0


@dataclass(frozen=True)
class TraceConfidence:
    """Every confidence of one trace, so offline filtering can use any of them."""

    lowest_group: float
    bottom10: float
    tail: float
    mean: float

    @classmethod
    def of(cls, confidences: Sequence[float], window: int, tail: int) -> TraceConfidence:
        return cls(
            lowest_group_confidence(confidences, window),
            bottom_percent_confidence(confidences, window, 10.0),
            tail_confidence(confidences, tail),
            mean_confidence(confidences),
        )

    def get(self, metric: Metric) -> float:
        value: float = getattr(self, metric)
        return value


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def keep_threshold(confidences: Sequence[float], keep_percent: float) -> float:
    """The confidence a trace needs to be in the top `keep_percent`%: the (100 - eta)th percentile."""
    return percentile(confidences, 100.0 - keep_percent)


def keep_top(confidences: Sequence[float], keep_percent: float) -> list[bool]:
    """Which traces survive offline filtering: those at or above the top-eta% threshold."""
    if not confidences:
        return []
    threshold = keep_threshold(confidences, keep_percent)
    return [value >= threshold for value in confidences]


def weighted_votes(answers: Sequence[str | None], weights: Sequence[float]) -> dict[str, float]:
    """`V(a) = sum of the weights of the traces answering a` (traces without an answer do not vote)."""
    votes: dict[str, float] = defaultdict(float)
    for answer, weight in zip(answers, weights, strict=True):
        if answer is not None:
            votes[answer] += weight
    return dict(votes)


def consensus(votes: dict[str, float]) -> tuple[str | None, float]:
    """The leading answer and its share of the weighted vote (beta in the paper); (None, 0) with no votes."""
    total = sum(votes.values())
    if not votes or total <= 0:
        return None, 0.0
    leader = max(votes, key=lambda answer: votes[answer])
    return leader, votes[leader] / total


class WindowMonitor:
    """Online: the sliding-window group confidence of one trace, token by token, and whether it has fallen
    below the threshold (checked only on full windows: a few first tokens are no evidence)."""

    def __init__(self, window: int, threshold: float) -> None:
        self.window = window
        self.threshold = threshold
        self._recent: deque[float] = deque(maxlen=window)
        self._total = 0.0
        self.tokens = 0
        self.lowest: float | None = None

    def push(self, confidence: float) -> bool:
        """Add one token's confidence; True when the trace should stop here."""
        if len(self._recent) == self.window:
            self._total -= self._recent[0]
        self._recent.append(confidence)
        self._total += confidence
        self.tokens += 1
        if len(self._recent) < self.window:
            return False
        group = self._total / self.window
        self.lowest = group if self.lowest is None else min(self.lowest, group)
        return group < self.threshold

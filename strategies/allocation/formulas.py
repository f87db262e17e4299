"""The closed forms the allocator predicts accuracy with (papers.md sections 2, 3 and 6). Pure functions.

- Imperfect verifiers (Stroebl et al.): per attempt r = P(correct), completeness c, soundness s;
  p_c = c r, p_f = (1 - r)(1 - s), beta = 1 - p_c - p_f; resampling until the verifier accepts is capped by
  the ceiling c r / (c r + (1 - r)(1 - s)), and with a false-positive value V_f < 0 the best K is finite.
- Majority vote: the probability that the correct answer wins a plurality of N samples, given p and the
  spread of the wrong answers over a few distinct values (exact, by counting).
- Saturation (TTSPM): F(N) = F_max (1 - (1 - p)^N); stop at N* where the marginal gain falls below eps.
- PassUntil: p ~ (K - 1) / (draws - 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Attempt:
    """One attempt's outcome probabilities under a verifier."""

    accepted_correct: float  # p_c
    accepted_wrong: float  # p_f

    @property
    def rejected(self) -> float:  # beta
        return max(0.0, 1.0 - self.accepted_correct - self.accepted_wrong)


def attempt(r: float, completeness: float, soundness: float) -> Attempt:
    return Attempt(completeness * r, (1.0 - r) * (1.0 - soundness))


def ceiling(r: float, completeness: float, soundness: float) -> float:
    """The accuracy that no number of resamples passes: c r / (c r + (1 - r)(1 - s))."""
    a = attempt(r, completeness, soundness)
    total = a.accepted_correct + a.accepted_wrong
    return a.accepted_correct / total if total > 0 else 0.0


def accepted_within(a: Attempt, k: int) -> float:
    """P(some attempt among the first k is accepted) = 1 - beta^k."""
    return 1.0 - a.rejected**k if k > 0 else 0.0


def correct_within(a: Attempt, k: int) -> float:
    """P(the first accepted attempt within k is correct) = p_c (1 - beta^k) / (1 - beta)."""
    total = a.accepted_correct + a.accepted_wrong
    return 0.0 if total <= 0 else a.accepted_correct * accepted_within(a, k) / total


def false_positive_within(a: Attempt, k: int) -> float:
    total = a.accepted_correct + a.accepted_wrong
    return 0.0 if total <= 0 else a.accepted_wrong * accepted_within(a, k) / total


def expected_samples(a: Attempt, k: int) -> float:
    """E[attempts] when stopping at the first acceptance or after k: (1 - beta^k) / (1 - beta)."""
    if a.rejected >= 1.0:
        return float(k)
    return (1.0 - a.rejected**k) / (1.0 - a.rejected)


def resampling_utility(
    mixture: Sequence[tuple[float, float]],
    completeness: float,
    soundness: float,
    k: int,
    false_positive_value: float,
) -> float:
    """E[U_K] = sum_{j=1..K} sum_i w_i beta_i^(j-1) (p_c,i - |V_f| p_f,i) for a mixture [(w_i, r_i)]."""
    penalty = abs(false_positive_value)
    total = 0.0
    for weight, r in mixture:
        a = attempt(r, completeness, soundness)
        per_step = a.accepted_correct - penalty * a.accepted_wrong
        total += weight * per_step * sum(a.rejected ** (j - 1) for j in range(1, k + 1))
    return total


def best_resampling_k(
    mixture: Sequence[tuple[float, float]],
    completeness: float,
    soundness: float,
    false_positive_value: float,
    max_k: int,
) -> tuple[int, float]:
    """(K*, E[U_K*]) over K = 1..max_k; (0, 0.0) — abstain — when no K has positive expected utility."""
    best_k, best_utility = 0, 0.0
    for k in range(1, max_k + 1):
        utility = resampling_utility(mixture, completeness, soundness, k, false_positive_value)
        if utility > best_utility + 1e-12:
            best_k, best_utility = k, utility
    return best_k, best_utility


def plurality_win(samples: int, p: float, wrong: Sequence[float]) -> float:
    """P(the correct answer wins the vote of `samples` draws); ties are broken uniformly at random.

    Each draw is correct with probability p, the i-th distinct wrong answer with probability wrong[i], and
    otherwise something that never wins (unparsable, or one of many scattered wrong answers). Exact: for every
    count k of correct draws, the wrong answers' counts are a multinomial over the other draws, counted by
    a dynamic programme over (draws used, number of wrong answers tied at k). Cached: the batch allocator
    re-prices every prompt's ladder every round, always at the same few rates.
    """
    return _plurality_win(samples, p, tuple(wrong))


@lru_cache(maxsize=65536)
def _plurality_win(samples: int, p: float, wrong: tuple[float, ...]) -> float:
    """plurality_win on hashable arguments (see there)."""
    if samples <= 0:
        return 0.0
    rest = max(0.0, 1.0 - p - sum(wrong))
    log_fact = [math.lgamma(i + 1) for i in range(samples + 1)]
    total = 0.0
    for k in range(1, samples + 1):
        # table[used][ties] = sum over wrong counts (each <= k) of prod wrong_i^x_i / x_i!
        table = [[0.0] * (len(wrong) + 1) for _ in range(samples - k + 1)]
        table[0][0] = 1.0
        for q in wrong:
            new = [[0.0] * (len(wrong) + 1) for _ in range(samples - k + 1)]
            for used in range(samples - k + 1):
                for ties in range(len(wrong) + 1):
                    value = table[used][ties]
                    if value == 0.0:
                        continue
                    for x in range(0, min(k, samples - k - used) + 1):
                        weight = value * (q**x if x else 1.0) / math.exp(log_fact[x])
                        new[used + x][ties + (x == k)] += weight
            table = new
        for used in range(samples - k + 1):
            left = samples - k - used
            for ties in range(len(wrong) + 1):
                if table[used][ties] == 0.0:
                    continue
                ways = math.exp(log_fact[samples] - log_fact[k] - log_fact[left])
                total += ways * p**k * table[used][ties] * (rest**left if left else 1.0) / (ties + 1)
    return min(1.0, total)


def saturation_samples(p: float, f_max: float, eps: float) -> int:
    """N* = ceil(ln(eps / (F_max p)) / ln(1 - p)): beyond it one more sample gains less than eps."""
    if p <= 0.0 or f_max * p <= eps:
        return 1
    if p >= 1.0:
        return 1
    return max(1, math.ceil(math.log(eps / (f_max * p)) / math.log(1.0 - p)))


def pass_until_rate(passes: int, draws: int) -> float:
    """PassUntil's unbiased estimate after sampling until `passes` successes in `draws` draws: (K-1)/(n-1)."""
    if draws <= 1:
        return float(passes >= 1)
    return max(0.0, (passes - 1) / (draws - 1))


def beta_mixture(successes: float, failures: float, points: int = 9) -> list[tuple[float, float]]:
    """A Beta(successes, failures) posterior as `points` weighted rates [(weight, r)] (midpoint rule)."""
    edges = [(i + 0.5) / points for i in range(points)]
    log_weights = [(successes - 1) * math.log(r) + (failures - 1) * math.log(1 - r) for r in edges]
    top = max(log_weights)
    weights = [math.exp(w - top) for w in log_weights]
    total = sum(weights)
    return [(w / total, r) for w, r in zip(weights, edges, strict=True)]

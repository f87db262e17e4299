"""What a candidate plan costs before it runs: Kinetics eFLOPs (service/runtime/cost.py) and engine seconds.

eFLOPs: the plan's engine calls at their expected generation lengths (the probe's mean length), the prompt's
KV counted once per call and shared by that call's samples, plus the verifier's calls.

Seconds: the idealized-runtime model of papers.md section 7, `T = T_prompt(L_in) + g(n) * (L_out - 1)`, with a
linear prompt time and a per-token slope that grows with the batch: g(n) = g1 + g2 n. Fitted by least squares
on measured engine calls (a start-up or on-demand sweep, and every auto request's own calls), kept in the
cache dir and Redis so every replica shares it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.runtime.cost import Hardware, ModelShape, decode_eflops, prefill_eflops, worst_case_eflops

logger = logging.getLogger(__name__)

SECONDS_KEY = "ttc:allocator:seconds_model"
OBSERVATIONS_KEY = "ttc:allocator:seconds_observations"
MAX_OBSERVATIONS = 400


@dataclass(frozen=True)
class CallShape:
    """One engine call of a plan: prompt tokens (and how many are cached), samples, expected lengths."""

    prompt_tokens: int
    samples: int
    expected_tokens: float
    max_tokens: int
    cached_tokens: int = 0


def lockstep(calls: int, samples: int, in_flight: int | None) -> int:
    """How many of a round's `calls` of `samples` each the engine runs together when at most `in_flight`
    samples may be in flight (None: no limit): they share every decode step's weight reads, as the samples
    of one call do, so each call is charged that share of them (its `weight_share`)."""
    together = calls if in_flight is None else in_flight // max(samples, 1)
    return max(1, min(calls, together))


def call_eflops(
    shape: ModelShape, hardware: Hardware, call: CallShape, weights: bool = True, weight_share: int = 1
) -> float:
    """Expected eFLOPs of one call (`weight_share`: calls the engine runs in lockstep with it, each paying
    that share of every decode step's weight reads; see service.runtime.cost.decode_eflops)."""
    if call.samples <= 0:
        return 0.0
    return prefill_eflops(shape, hardware, call.prompt_tokens - call.cached_tokens) + decode_eflops(
        shape, hardware, call.prompt_tokens, call.expected_tokens, call.samples, weights, weight_share
    )


def call_worst_eflops(
    shape: ModelShape, hardware: Hardware, call: CallShape, weights: bool = True, weight_share: int = 1
) -> float:
    if call.samples <= 0:
        return 0.0
    return worst_case_eflops(
        shape, hardware, call.prompt_tokens, call.samples, call.max_tokens, weights, weight_share
    )


@dataclass
class SecondsModel:
    """T = a + b L_in + (g1 + g2 n) L_out, fitted on measured calls; `fitted` says whether it was."""

    intercept: float = 0.05
    per_prompt_token: float = 2e-4
    per_token: float = 0.02
    per_token_per_sample: float = 1e-3
    observations: int = 0
    fitted: bool = False
    source: str = "default"
    extra: dict[str, Any] = field(default_factory=dict)

    def predict(self, call: CallShape) -> float:
        if call.samples <= 0:
            return 0.0
        slope = self.per_token + self.per_token_per_sample * call.samples
        uncached = max(call.prompt_tokens - call.cached_tokens, 0)
        return self.intercept + self.per_prompt_token * uncached + slope * max(call.expected_tokens - 1, 0)

    @classmethod
    def fit(cls, rows: Sequence[Sequence[float]], source: str) -> SecondsModel:
        """Least squares (non-negative by clipping) on rows (prompt_tokens, samples, mean_tokens, seconds)."""
        if len(rows) < 4:
            return cls(observations=len(rows), source=f"{source} (too few calls; defaults)")
        x = np.array([[1.0, p, max(t - 1, 0.0), n * max(t - 1, 0.0)] for p, n, t, _ in rows])
        y = np.array([s for *_, s in rows])
        coefficients, *_ = np.linalg.lstsq(x, y, rcond=None)
        a, b, g1, g2 = (max(float(value), 0.0) for value in coefficients)
        if g1 == 0.0 and g2 == 0.0:
            g1 = float(np.sum(y) / max(np.sum(x[:, 2]), 1.0))
        residual = y - x @ np.array([a, b, g1, g2])
        error = float(np.mean(np.abs(residual)) / max(float(np.mean(y)), 1e-9))
        return cls(a, b, g1, g2, len(rows), True, source, {"relative_abs_error": round(error, 4)})

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SecondsModel:
        return cls(**json.loads(text))


def seconds_file(cache_dir: Path) -> Path:
    return cache_dir / "allocator-seconds-model.json"


def load_seconds_model_file(cache_dir: Path) -> SecondsModel | None:
    path = seconds_file(cache_dir)
    try:
        return SecondsModel.from_json(path.read_text()) if path.exists() else None
    except (ValueError, TypeError):
        logger.warning("ignoring unreadable %s", path)
        return None


def save_seconds_model_file(cache_dir: Path, model: SecondsModel) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    seconds_file(cache_dir).write_text(model.to_json())


def log_bins(low: int, high: int) -> list[int]:
    """1, 2, 4, ... up to high (and high itself), at least `low`."""
    values, n = [], 1
    while n < high:
        if n >= low:
            values.append(n)
        n *= 2
    if high >= low:
        values.append(high)
    return sorted(set(values))


def ratio(predicted: float, measured: float) -> float | None:
    """measured / predicted, rounded; None when nothing was predicted."""
    if predicted <= 0 or not math.isfinite(predicted):
        return None
    return round(measured / predicted, 4)

"""Measured strategy profiles: data files fitted from benchmark runs (`loadtests/fit_profiles.py`).

A profile is `profiles/<strategy>.json`:

    {"strategy": "best_of_n", "probe_size": 4, "fitted_on": "...", "problems": 120,
     "bins": [{"signature": m, "weight": share of prompts, "p_mixture": [[w, r], ...], "wrong_shares": [...],
               "accuracy": {"<plan key>": {"<samples>": accuracy}}}],
     "plans": [{"params": {...}, "uses_verifier": bool, "cost_units": mean eFLOPs / one sample's eFLOPs,
                "accuracy": [accuracy per signature]}]}

`signature` is the probe's outcome: how many of the probe's samples agree with its most common answer (0..k).
`bins` carries what the difficulty estimate needs (the distribution of the per-sample success rate p given
the probe's outcome) and, for best-of-N, measured accuracy at each total sample count. `plans` is the form
every other strategy's profile takes: each parameter setting, its measured cost in units of one sample and its
measured accuracy per probe outcome. Adding a strategy to `auto` is adding its profile file. The best-of-N
profile may also carry `confidence_bins`, thresholds on the probe's most confident sample, and one
confidence-vote table per level they make (`confidence@0`, `confidence@1`, ...; the batch benchmark fits them).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
POPULATION = -2  # the signature of "no probe": every probe outcome of the fit set, by its weight


@dataclass(frozen=True)
class ProfileBin:
    signature: int
    weight: float
    p_mixture: tuple[tuple[float, float], ...]
    wrong_shares: tuple[float, ...]
    accuracy: dict[str, dict[int, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfilePlan:
    params: dict[str, Any]
    uses_verifier: bool
    cost_units: float
    accuracy: tuple[float, ...]


@dataclass(frozen=True)
class Profile:
    strategy: str
    probe_size: int
    source: str
    bins: tuple[ProfileBin, ...]
    plans: tuple[ProfilePlan, ...]
    # thresholds on the probe's most confident sample that split its confidence-vote tables (see
    # strategies.allocation.batch.confidence_table); empty: one table per probe agreement
    confidence_bins: tuple[float, ...] = ()

    def bin_for(self, signature: int) -> ProfileBin | None:
        for item in self.bins:
            if item.signature == signature:
                return item
        return None

    def measured(self, key: str, signature: int, samples: int) -> float | None:
        """Measured accuracy for a best-of-N style plan, interpolated in log(samples) between measured N;
        for POPULATION, the bins' accuracies averaged by how often the fit set's prompts fell in each."""
        if signature == POPULATION:
            weighted = [(item.weight, self.measured(key, item.signature, samples)) for item in self.bins]
            total = sum(weight for weight, _ in weighted)
            if total <= 0 or any(value is None for weight, value in weighted if weight > 0):
                return None
            return sum(weight * (value or 0.0) for weight, value in weighted) / total
        item = self.bin_for(signature)
        table = item.accuracy.get(key) if item else None
        if not table:
            return None
        if samples in table:
            return table[samples]
        known = sorted(table)
        if samples < known[0] or samples > known[-1]:
            return None
        upper = next(n for n in known if n > samples)
        lower = max(n for n in known if n < samples)
        t = (math.log(samples) - math.log(lower)) / (math.log(upper) - math.log(lower))
        return table[lower] + t * (table[upper] - table[lower])


def parse_profile(data: dict[str, Any], source: str) -> Profile:
    bins = tuple(
        ProfileBin(
            signature=int(item["signature"]),
            weight=float(item.get("weight", 0.0)),
            p_mixture=tuple((float(w), float(r)) for w, r in item["p_mixture"]),
            wrong_shares=tuple(float(x) for x in item.get("wrong_shares", [])),
            accuracy={
                key: {int(n): float(value) for n, value in table.items()}
                for key, table in item.get("accuracy", {}).items()
            },
        )
        for item in data.get("bins", [])
    )
    plans = tuple(
        ProfilePlan(
            params=dict(item["params"]),
            uses_verifier=bool(item.get("uses_verifier", False)),
            cost_units=float(item["cost_units"]),
            accuracy=tuple(float(x) for x in item["accuracy"]),
        )
        for item in data.get("plans", [])
    )
    return Profile(
        str(data["strategy"]),
        int(data.get("probe_size", 4)),
        source,
        bins,
        plans,
        tuple(float(x) for x in data.get("confidence_bins", [])),
    )


def load_profiles(directory: Path | None = None) -> dict[str, Profile]:
    """Every profile file in the directory, by strategy name; re-read only when a file changes."""
    folder = directory or PROFILE_DIR
    stamp = tuple((path.name, path.stat().st_mtime_ns) for path in sorted(folder.glob("*.json")))
    return _read_profiles(folder, stamp)


@lru_cache(maxsize=8)
def _read_profiles(folder: Path, stamp: tuple[tuple[str, int], ...]) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for name, _ in stamp:
        path = folder / name
        try:
            profile = parse_profile(json.loads(path.read_text()), path.name)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring malformed profile %s: %r", path, exc)
            continue
        profiles[profile.strategy] = profile
    return profiles

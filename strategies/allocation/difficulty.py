"""Difficulty of one prompt from a cheap probe: the distribution of its per-sample success rate p.

The probe draws k samples (they later join the final vote). Its outcome is summarised by the signature m:
how many probe samples agree with the most common answer. With a measured profile, p given m is the
distribution of p measured on the fit set's prompts with that probe outcome (Snell et al.'s deployable
difficulty bins, with the probe's agreement instead of ground truth). Without one, PassUntil's estimate
treats the modal answer as the pass: (m - 1) successes and k - m failures, a Beta posterior. Verifier scores
of the probe then reweight p by the likelihood of the accepts seen, P(accept | r) = c r + (1 - s)(1 - r).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from service.store.allocation import VerifierCalibration
from strategies.allocation import formulas
from strategies.allocation.profiles import POPULATION, Profile
from strategies.base import Candidate

BIN_EDGES = (0.05, 0.25, 0.55, 0.85)
BIN_NAMES = ("hopeless", "hard", "medium", "easy", "trivial")
DEFAULT_WRONG_SHARES = (0.5, 0.2)


@dataclass
class Difficulty:
    signature: int
    mixture: list[tuple[float, float]]
    wrong_shares: list[float]
    source: str
    accepted: int | None = None

    @property
    def p(self) -> float:
        return sum(w * r for w, r in self.mixture)

    @property
    def bin(self) -> int:
        return sum(self.p >= edge for edge in BIN_EDGES)

    @property
    def bin_name(self) -> str:
        return BIN_NAMES[self.bin]


def signature(candidates: Sequence[Candidate]) -> int:
    """How many candidates share the most common (parsed) answer."""
    counts = Counter(c.answer for c in candidates if c.answer is not None)
    return max(counts.values(), default=0)


def reweight(
    mixture: list[tuple[float, float]], accepted: int, total: int, calibration: VerifierCalibration
) -> list[tuple[float, float]]:
    """Bayes: multiply each p's weight by the likelihood of `accepted` accepts in `total` verifier calls."""
    c, s = calibration.completeness, calibration.soundness
    weights = []
    for weight, r in mixture:
        accept = min(max(c * r + (1 - s) * (1 - r), 1e-6), 1 - 1e-6)
        weights.append(weight * accept**accepted * (1 - accept) ** (total - accepted))
    norm = sum(weights)
    if norm <= 0:
        return mixture
    return [(w / norm, r) for w, (_, r) in zip(weights, mixture, strict=True)]


def estimate(
    probe: Sequence[Candidate],
    profile: Profile | None,
    calibration: VerifierCalibration | None,
    prior: tuple[float, float] | None = None,
) -> Difficulty:
    """p's distribution from the probe (and an optional Beta prior from similar past prompts)."""
    k = len(probe)
    m = signature(probe)
    measured = profile.bin_for(m) if profile is not None and profile.probe_size == k else None
    if measured is not None and measured.p_mixture:
        mixture = list(measured.p_mixture)
        shares = list(measured.wrong_shares) or list(DEFAULT_WRONG_SHARES)
        source = f"measured profile ({profile.source if profile else ''}, probe agreement {m}/{k})"
    else:
        successes = max(m - 1, 0) + 0.5
        failures = (k - m) + 0.5
        mixture = formulas.beta_mixture(successes, failures)
        shares = list(DEFAULT_WRONG_SHARES)
        source = f"PassUntil estimate (probe agreement {m}/{k})"
    if prior is not None:
        a, b = prior
        combined = [(w * r ** (a - 1) * (1 - r) ** (b - 1), r) for w, r in mixture]
        norm = sum(w for w, _ in combined)
        if norm > 0:
            mixture = [(w / norm, r) for w, r in combined]
            source += ", sharpened by similar past prompts"
    accepted = None
    scored = [c.score for c in probe if c.score is not None]
    if calibration is not None and scored:
        accepted = sum(score >= calibration.threshold for score in scored)
        mixture = reweight(mixture, accepted, len(scored), calibration)
        source += f", verifier accepted {accepted}/{len(scored)}"
    return Difficulty(m, mixture, shares, source, accepted)


def population(profile: Profile) -> Difficulty:
    """Before any probe: p's distribution over the fit set's prompts (every probe outcome, by its weight)."""
    total = sum(item.weight for item in profile.bins) or 1.0
    mixture = [(item.weight / total * w, r) for item in profile.bins for w, r in item.p_mixture]
    width = max((len(item.wrong_shares) for item in profile.bins), default=0)
    shares = [
        sum(item.weight / total * item.wrong_shares[i] for item in profile.bins if i < len(item.wrong_shares))
        for i in range(width)
    ]
    return Difficulty(
        POPULATION,
        mixture,
        shares or list(DEFAULT_WRONG_SHARES),
        f"the fit set's prompts ({profile.source}), no probe",
    )


def from_prior(alpha: float, beta: float, neighbours: int) -> Difficulty:
    """No probe: p's distribution from similar past prompts alone."""
    return Difficulty(
        -1,
        formulas.beta_mixture(alpha, beta),
        list(DEFAULT_WRONG_SHARES),
        f"{neighbours} similar past prompts (no probe)",
    )

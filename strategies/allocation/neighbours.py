"""Outcomes of similar past prompts: a Beta prior on p before any sample is drawn.

The question is embedded with all-MiniLM-L6-v2 (loaded once per process, on first use; encoding runs off the
event loop). Each finished auto request stores (embedding, observed agreement share of its samples) in a
capped Redis list per memory namespace; a new prompt's prior comes from its nearest stored neighbours. With
enough close neighbours the allocator can choose its plan without a probe: one engine call instead of two,
which matters when each call's weight reads dominate its eFLOPs (small models, small batches).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from service.corpora import DEFAULT_EMBEDDING_MODEL, Embedder
from strategies.allocation import store

logger = logging.getLogger(__name__)

KEY_PREFIX = "ttc:allocator:outcomes:"
KEEP = 1000
SIMILARITY = 0.75
PSEUDO_SAMPLES = 4.0  # what one neighbour's outcome counts for, in samples
CONFIDENT = 3  # neighbours needed to skip the probe


@dataclass(frozen=True)
class Prior:
    alpha: float
    beta: float
    neighbours: int
    mean_similarity: float
    tokens: float | None = None

    @property
    def confident(self) -> bool:
        return self.neighbours >= CONFIDENT

    @property
    def p(self) -> float:
        return self.alpha / (self.alpha + self.beta)


@lru_cache(maxsize=1)
def embedder() -> Embedder:
    return Embedder(DEFAULT_EMBEDDING_MODEL)


async def embed(question: str) -> list[float]:
    vectors = await embedder().encode([question])
    return [round(float(x), 4) for x in vectors[0]]


def prior_from(vector: list[float], rows: list[dict[str, object]], k: int = 8) -> Prior | None:
    """Beta(0.5 + sum w p * m, 0.5 + sum w (1 - p) * m) over the k most similar rows above the threshold."""
    if not rows:
        return None
    matrix = np.array([row["v"] for row in rows], dtype=np.float32)
    similarities = matrix @ np.array(vector, dtype=np.float32)
    order = np.argsort(-similarities)[:k]
    picked = [int(i) for i in order if similarities[i] >= SIMILARITY]
    if not picked:
        return None
    chosen = [(float(similarities[i]), float(rows[i]["p"])) for i in picked]  # type: ignore[arg-type]
    alpha = 0.5 + sum(w * p * PSEUDO_SAMPLES for w, p in chosen)
    beta = 0.5 + sum(w * (1 - p) * PSEUDO_SAMPLES for w, p in chosen)
    lengths = [float(rows[i]["t"]) for i in picked if "t" in rows[i]]  # type: ignore[arg-type]
    tokens = sum(lengths) / len(lengths) if lengths else None
    return Prior(alpha, beta, len(chosen), sum(w for w, _ in chosen) / len(chosen), tokens)


async def lookup(url: str, memory: str, vector: list[float]) -> Prior | None:
    rows = await store.read_list(url, KEY_PREFIX + memory)
    try:
        return prior_from(vector, rows)
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable outcome memory: %r", exc)
        return None


async def remember(url: str, memory: str, vector: list[float], p: float, tokens: float) -> None:
    row = {"v": vector, "p": round(p, 4), "t": round(tokens, 1)}
    await store.push_json(url, KEY_PREFIX + memory, row, KEEP, read_back=False)

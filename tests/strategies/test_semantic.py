"""Average-linkage clustering on cosine distance, and the real embedding model behind it."""

from __future__ import annotations

import numpy as np

from strategies.semantic import average_linkage_clusters, cosine_distances, embed


def test_near_parallel_vectors_share_a_cluster() -> None:
    vectors = np.array([[1.0, 0.0, 0.0], [0.99, 0.01, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert average_linkage_clusters(vectors, 0.05) == [0, 0, 1, 2]
    assert average_linkage_clusters(vectors, 1.5) == [0, 0, 0, 0]
    assert average_linkage_clusters(vectors[:0], 0.05) == []


def test_average_linkage_does_not_chain() -> None:
    # a-b and b-c are each within the cut, a-c is not: single linkage would chain all three, average
    # linkage merges one pair and then finds the third too far on average.
    angle = np.radians([0.0, 16.0, 32.0])
    vectors = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    distances = cosine_distances(vectors)
    assert distances[0, 1] < 0.05 and distances[0, 2] > 0.05
    labels = average_linkage_clusters(vectors, 0.05)
    assert len(set(labels)) == 2


def test_real_embeddings_group_paraphrases() -> None:
    vectors = embed(["The answer is 42.", "The answer is 42.", "Paris is the capital of France."])
    assert vectors.shape == (3, 384)
    assert average_linkage_clusters(vectors, 0.05) == [0, 0, 1]

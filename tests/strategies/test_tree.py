"""The search tree's bookkeeping and the width splits, without an engine."""

from __future__ import annotations

from service.runtime.engine import Sample
from strategies.tree import SearchTree, softmax_allocation, split_evenly, step_finished


def test_live_tokens_count_the_prompt_and_each_shared_node_once() -> None:
    tree = SearchTree(list(range(100)))
    a = tree.add(tree.root, [1] * 10, "a\n\n")
    b = tree.add(a, [2] * 5, "b\n\n")
    c = tree.add(a, [3] * 7, "c\n\n")
    d = tree.add(tree.root, [4] * 3, "d")
    assert tree.live_tokens([b, c]) == 100 + 10 + 5 + 7
    assert tree.live_tokens([b, c, d]) == 100 + 10 + 5 + 7 + 3
    assert tree.live_tokens([]) == 100
    assert tree.sequence(c) == list(range(100)) + [1] * 10 + [3] * 7
    assert tree.solution_text(c) == "a\n\nc\n\n"
    assert tree.solution_tokens(c) == 17
    assert [node.depth for node in (a, b, d)] == [1, 2, 1]


def test_a_step_continues_at_the_delimiter_and_ends_at_eos_or_a_marker() -> None:
    def sample(text: str, reason: str) -> Sample:
        return Sample(text=text, token_ids=[1, 2], finish_reason=reason)

    assert not step_finished(sample("First, 2 + 3 = 5.\n\n", "stop"), "\n\n", 10, 100)
    assert step_finished(sample("So 5.", "stop"), "\n\n", 10, 100)  # EOS
    assert step_finished(sample("The final answer is 5.\n\n", "stop"), "\n\n", 10, 100)
    assert not step_finished(sample("a long step", "length"), "\n\n", 10, 100)
    assert step_finished(sample("a long step", "length"), "\n\n", 100, 100)
    assert step_finished(sample("cut", "abort"), "\n\n", 10, 100)


def test_rebase_split_follows_the_softmax_best_first() -> None:
    # exp(s/T) at T = 0.2 relative to the best: 1, e^-2, e^-4 -> ceil(8 * 0.867) = 7, then ceil(1 * 0.88) = 1.
    assert softmax_allocation([0.9, 0.5, 0.1], 8, 0.2) == [7, 1, 0]
    assert softmax_allocation([0.1, 0.9, 0.5], 8, 0.2) == [0, 7, 1]
    assert softmax_allocation([0.5] * 4, 8, 0.2) == [2, 2, 2, 2]
    assert softmax_allocation([0.9, 0.5, 0.1], 8, 100.0) == [3, 3, 2]
    assert softmax_allocation([], 8, 0.2) == []
    assert softmax_allocation([0.3, 0.2], 0, 0.2) == [0, 0]
    for width in range(1, 20):
        assert sum(softmax_allocation([0.9, 0.7, 0.69, 0.1, 0.0], width, 0.2)) == width


def test_split_evenly() -> None:
    assert split_evenly(8, 3) == [3, 3, 2]
    assert split_evenly(4, 4) == [1, 1, 1, 1]
    assert split_evenly(5, 0) == []

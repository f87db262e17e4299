import pytest

from service.runtime.cost import (
    HARDWARE_PRESETS,
    Hardware,
    ModelShape,
    decode_eflops,
    generation_eflops,
    worst_case_eflops,
)

SMOLLM2_CONFIG = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}
B200_LIKE = Hardware("test", 562.5, 1.0)


def test_parameter_count_from_config_matches_smollm2() -> None:
    shape = ModelShape.from_config(SMOLLM2_CONFIG)
    assert shape.parameters == 134_515_008
    assert (shape.layers, shape.query_heads, shape.kv_heads, shape.head_dim) == (30, 9, 3, 64)


def test_kinetics_worked_example() -> None:
    """papers.md: L_in = 100, L_out = 50, N = 8, I = 562.5 -> 3.05468e11 eFLOPs (weights amortized)."""
    shape = ModelShape.from_config(SMOLLM2_CONFIG)
    value = decode_eflops(shape, B200_LIKE, 100, 50, 8, count_weight_loading=False)
    assert abs(value - 3.05468e11) / 3.05468e11 < 1e-5
    assert HARDWARE_PRESETS["b200"].intensity == 562.5


def test_weight_loading_adds_one_weight_read_per_step() -> None:
    shape = ModelShape.from_config(SMOLLM2_CONFIG)
    without = decode_eflops(shape, B200_LIKE, 100, 50, 8, count_weight_loading=False)
    with_weights = decode_eflops(shape, B200_LIKE, 100, 50, 8, count_weight_loading=True)
    assert with_weights - without == 562.5 * 2 * shape.parameters * 50


def test_samples_share_the_prompt() -> None:
    """Many samples on a long prompt cost less per sample than one: the prompt's KV is read once."""
    shape = ModelShape.from_config(SMOLLM2_CONFIG)
    one = decode_eflops(shape, B200_LIKE, 2000, 50, 1, False)
    sixteen = decode_eflops(shape, B200_LIKE, 2000, 50, 16, False)
    assert sixteen < 16 * one


def test_worst_case_bounds_actual_cost() -> None:
    shape = ModelShape.from_config(SMOLLM2_CONFIG)
    actual = generation_eflops(shape, B200_LIKE, 100, 64, [10, 50, 30, 0], True)
    assert actual <= worst_case_eflops(shape, B200_LIKE, 100, 4, 50, True)
    assert generation_eflops(shape, B200_LIKE, 100, 100, [], True) == 0.0


def test_calls_run_together_share_the_weight_reads() -> None:
    """k one-sample calls of a round, batched by the engine like one call's k samples, each pay 1/k of the
    weight read of a step (deepconf's online rounds); the rest of the cost is unchanged."""
    shape = ModelShape.from_config(SMOLLM2_CONFIG)
    alone = decode_eflops(shape, B200_LIKE, 100, 50, 1, True)
    shared = decode_eflops(shape, B200_LIKE, 100, 50, 1, True, weight_share=4)
    assert alone - shared == pytest.approx(562.5 * 2 * shape.parameters * 50 * 3 / 4)
    assert generation_eflops(shape, B200_LIKE, 100, 0, [50], True, 4) == pytest.approx(
        shared + 2 * shape.parameters * 100
    )


@pytest.mark.parametrize("share", [1, 3, 16])
def test_a_shared_call_is_charged_within_its_shared_worst_case(share: int) -> None:
    """The tracker reserves a call's worst case with the weight share it will be charged with (a batch's
    round), so the charge never exceeds the reservation, and sharing lowers both."""
    shape = ModelShape(134_515_008, 30, 9, 3, 64)
    worst = worst_case_eflops(shape, B200_LIKE, 40, 4, 24, True, share)
    charged = generation_eflops(shape, B200_LIKE, 40, 0, [24, 24, 3, 10], True, share)
    assert charged <= worst
    assert worst <= worst_case_eflops(shape, B200_LIKE, 40, 4, 24, True, 1)
    if share > 1:
        assert worst < worst_case_eflops(shape, B200_LIKE, 40, 4, 24, True, 1)

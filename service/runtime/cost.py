"""Kinetics cost model: what a generation costs in equivalent FLOPs (compute plus memory traffic).

    eFLOPs = compute + I * memory_bytes,  I = peak FLOP/s / memory bytes/s of the hardware

The prompt's KV is read once per decode step and shared by the samples; each sample's own KV is its own.
That asymmetry is why many samples on a long prompt are cheap and long generations are not.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

BYTES_PER_ELEMENT = 2  # bf16


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a transformer that its cost depends on (from config.json)."""

    parameters: int
    layers: int
    query_heads: int
    kv_heads: int
    head_dim: int

    @property
    def head_dim_all_layers(self) -> int:
        return self.head_dim * self.layers

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        """Read a Hugging Face config.json; counts parameters of a standard decoder if none is given."""
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        query_heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or query_heads)
        head_dim = int(config.get("head_dim") or hidden // query_heads)
        intermediate = int(config.get("intermediate_size") or 4 * hidden)
        vocab = int(config.get("vocab_size") or 0)
        attention = hidden * query_heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
        mlp = 3 * hidden * intermediate
        per_layer = attention + mlp + 2 * hidden
        embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", True) else 2)
        parameters = layers * per_layer + embeddings + hidden
        return cls(parameters, layers, query_heads, kv_heads, head_dim)

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> ModelShape:
        return cls.from_config(json.loads((model_dir / "config.json").read_text()))

    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V one token keeps in the cache, all layers."""
        return 2 * self.kv_heads * self.head_dim_all_layers * BYTES_PER_ELEMENT


@dataclass(frozen=True)
class Hardware:
    """Peak compute and memory bandwidth; their ratio I converts bytes into equivalent FLOPs."""

    name: str
    peak_flops: float
    memory_bytes_per_second: float

    @property
    def intensity(self) -> float:
        return self.peak_flops / self.memory_bytes_per_second


# Dense bf16 peak and HBM bandwidth from the vendors' data sheets.
HARDWARE_PRESETS: dict[str, Hardware] = {
    "h100": Hardware("h100", 989e12, 3.35e12),
    "h200": Hardware("h200", 989e12, 4.8e12),
    "b200": Hardware("b200", 4.5e15, 8e12),  # I = 562.5, the Kinetics paper's setting
    "a100": Hardware("a100", 312e12, 2.039e12),
}


def decode_eflops(
    shape: ModelShape,
    hardware: Hardware,
    prompt_tokens: float,
    generated_tokens: float,
    samples: int,
    count_weight_loading: bool = True,
    weight_share: int = 1,
) -> float:
    """Kinetics eFLOPs of `samples` sequences of `generated_tokens` each after a shared prompt.

    `generated_tokens` is the mean generated length of the samples (the paper's per-query rule).
    With `count_weight_loading`, each decode step also reads the weights once for the request's samples; a call
    that runs in lockstep with `weight_share - 1` sibling calls of the same request (one round of separate
    one-sample calls, which vLLM batches exactly like the samples of one call) pays its share of that read.
    """
    if samples <= 0 or generated_tokens <= 0:
        return 0.0
    hd_all = shape.head_dim_all_layers
    p, l_in, l_out, n = shape.parameters, prompt_tokens, generated_tokens, samples
    compute = n * (2 * p * l_out + 2 * (2 * l_in + l_out) * l_out * shape.query_heads * hd_all)
    memory = 2 * (2 * l_in + n * l_out) * l_out * shape.kv_heads * hd_all
    if count_weight_loading:
        memory += BYTES_PER_ELEMENT * p * l_out / max(weight_share, 1)
    return compute + hardware.intensity * memory


def prefill_eflops(shape: ModelShape, hardware: Hardware, new_prompt_tokens: float) -> float:
    """Prompt processing is compute bound: 2 P per token (attention over the prompt is small beside it)."""
    return 2.0 * shape.parameters * max(new_prompt_tokens, 0.0)


def generation_eflops(
    shape: ModelShape,
    hardware: Hardware,
    prompt_tokens: int,
    cached_prompt_tokens: int,
    sample_lengths: list[int],
    count_weight_loading: bool = True,
    weight_share: int = 1,
) -> float:
    """What one finished engine call cost: prefill of the uncached prompt plus decoding at the mean length
    (`weight_share`: see `decode_eflops`)."""
    if not sample_lengths:
        return prefill_eflops(shape, hardware, prompt_tokens - cached_prompt_tokens)
    mean_length = sum(sample_lengths) / len(sample_lengths)
    return prefill_eflops(shape, hardware, prompt_tokens - cached_prompt_tokens) + decode_eflops(
        shape, hardware, prompt_tokens, mean_length, len(sample_lengths), count_weight_loading, weight_share
    )


def worst_case_eflops(
    shape: ModelShape,
    hardware: Hardware,
    prompt_tokens: int,
    samples: int,
    max_tokens: int,
    count_weight_loading: bool = True,
    weight_share: int = 1,
) -> float:
    """Upper bound of a call before it runs: nothing cached, every sample runs to max_tokens (charged with
    the same `weight_share` as the call, see `decode_eflops`)."""
    return prefill_eflops(shape, hardware, prompt_tokens) + decode_eflops(
        shape, hardware, prompt_tokens, max_tokens, samples, count_weight_loading, weight_share
    )


def measure_cpu(seconds: float = 1.0) -> Hardware:
    """Measure this machine's matmul FLOP/s and memory copy bandwidth (a few seconds, once)."""
    import torch

    size = 1024
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    torch.mm(a, b)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 2:
        torch.mm(a, b)
        runs += 1
    flops = 2 * size**3 * runs / (time.perf_counter() - start)

    source = torch.empty(64 * 1024 * 1024, dtype=torch.uint8)
    target = torch.empty_like(source)
    target.copy_(source)
    copies, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 2:
        target.copy_(source)
        copies += 1
    bandwidth = 2 * source.numel() * copies / (time.perf_counter() - start)  # read + write
    return Hardware("cpu", flops, bandwidth)


def load_hardware(name: str, cache_dir: Path) -> Hardware:
    """A preset by name, or for `cpu` the profile measured on this machine (measured once, then kept)."""
    if name in HARDWARE_PRESETS:
        return HARDWARE_PRESETS[name]
    profile_file = cache_dir / "hardware-cpu.json"
    if profile_file.exists():
        data = json.loads(profile_file.read_text())
        return Hardware("cpu", float(data["peak_flops"]), float(data["memory_bytes_per_second"]))
    hardware = measure_cpu()
    cache_dir.mkdir(parents=True, exist_ok=True)
    profile_file.write_text(
        json.dumps(
            {"peak_flops": hardware.peak_flops, "memory_bytes_per_second": hardware.memory_bytes_per_second}
        )
    )
    logger.info(
        "measured cpu: %.3g FLOP/s, %.3g B/s (I = %.1f)",
        hardware.peak_flops,
        hardware.memory_bytes_per_second,
        hardware.intensity,
    )
    return hardware

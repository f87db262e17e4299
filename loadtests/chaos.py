"""Chaos run for background jobs: jobs of mixed strategies over two replicas (one vLLM server behind both,
remote engine), while each replica is SIGKILLed and restarted once and Redis is killed (or, with
--redis-restart clean, stopped) and restarted once.

Everything runs on this script's own processes: a redis-server with append-only persistence on a free port
(its data in the results folder; the machine's shared Redis is never touched), one vLLM OpenAI server and two
service replicas. Every submission carries an Idempotency-Key and is retried on the other replica when a
replica or Redis is down, so a retry never makes a second job.

Reports: jobs submitted, succeeded, failed (with reasons), lost (submitted but gone or never finished: must be
0), runs beyond the first (by cause: a killed replica, a drain, or neither = a duplicate execution that charged
twice), and the time from each kill to the takeover of the jobs the killed replica was running.

    python -m loadtests.chaos --jobs 100
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis

from loadtests.harness import (
    ROOT,
    RedisServer,
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

RESULTS = ROOT / "loadtests" / "results" / "chaos"
PROMPTS = [
    f"What is {a} + {b}? Answer with just the number." for a, b in [(12, 30), (23, 45), (7, 58), (61, 19)]
]
# Small but real work per strategy, so a run holds a few jobs in flight on every replica at any moment.
STRATEGIES: list[dict[str, Any]] = [
    {"strategy": "none", "sampling": {"max_tokens": 32}},
    {"strategy": "best_of_n", "params": {"n": 4}, "sampling": {"max_tokens": 48}},
    {"strategy": "revision", "params": {"chains": 1, "depth": 2}, "sampling": {"max_tokens": 32}},
    {"strategy": "beam_search", "params": {"width": 4, "beam_width": 2, "max_depth": 2, "step_tokens": 24},
     "verifier": {"name": "calculator"}, "sampling": {"max_tokens": 64}},
    {"strategy": "auto", "budget": {"tokens": 256}, "sampling": {"max_tokens": 32}},
]  # fmt: skip


class Replica:
    def __init__(self, name: str, port: int, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.port, self.args, self.env, self.log_dir = name, port, args, env, log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        _, self.process = start_ready_service(
            self.log_dir, *self.args, env=self.env, port=self.port, timeout=600
        )
        self.pids.append(self.process.pid)

    def kill(self) -> float:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        killed_at = time.time()
        self.process.wait()
        return killed_at


def submit_all(replicas: list[Replica], bodies: list[dict[str, Any]], keys: list[str], ids: list[str | None],
               errors: Counter[str]) -> None:  # fmt: skip
    """Submit each body (retrying on the other replica while one or Redis is down; same Idempotency-Key)."""
    with httpx.Client(timeout=30) as http:
        for index, body in enumerate(bodies):
            deadline = time.monotonic() + 300
            attempt = 0
            while ids[index] is None and time.monotonic() < deadline:
                replica = replicas[(index + attempt) % len(replicas)]
                attempt += 1
                try:
                    reply = http.post(
                        f"{replica.url}/v1/solve", json=body, headers={"Idempotency-Key": keys[index]}
                    )
                except httpx.HTTPError as exc:
                    errors[f"submit: {type(exc).__name__}"] += 1
                    time.sleep(0.2)
                    continue
                if reply.status_code == 202:
                    ids[index] = reply.json()["id"]
                else:
                    errors[f"submit: HTTP {reply.status_code}"] += 1
                    time.sleep(0.2)
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100, help="Background jobs to submit.")
    parser.add_argument("--visibility", type=float, default=5.0, help="Replicas' job visibility timeout (s).")
    parser.add_argument("--grace", type=float, default=5.0, help="Replicas' shutdown grace period (s).")
    parser.add_argument("--timeout", type=float, default=1800.0, help="Give up waiting for jobs after (s).")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Logs, Redis data and the JSON result.")
    parser.add_argument(
        "--redis-restart",
        choices=("kill", "clean"),
        default="kill",
        help="How Redis goes down mid-run: SIGKILL (a crash) or SIGTERM (a clean shutdown).",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, interrupt)
    run_dir = args.results / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)

    own_redis = RedisServer(run_dir / "redis")
    own_redis.start()
    model_dir = str(ensure_default_model(Settings().model_cache_dir))
    vllm_port = free_port()
    vllm_log = run_dir / "vllm.log"
    vllm = start_vllm(vllm_port, Path(model_dir), "smol", vllm_log, kv_cache_gib=2)
    replicas: list[Replica] = []
    try:
        wait_ready(f"http://127.0.0.1:{vllm_port}", vllm, "/health", timeout=600, log_path=vllm_log)
        env = {
            "TTC_REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0",
            "TTC_JOB_VISIBILITY_TIMEOUT_SECONDS": str(args.visibility),
            "TTC_SHUTDOWN_GRACE_SECONDS": str(args.grace),
            "TTC_JOB_CONCURRENCY": "2",
        }
        service_args = [
            "--engine", "remote", "--engine-url", f"http://127.0.0.1:{vllm_port}", "--model", model_dir,
            "--log-level", "warning",
        ]  # fmt: skip
        replicas = [Replica(name, free_port(), service_args, env, run_dir) for name in ("a", "b")]
        for replica in replicas:
            replica.start()
        print(f"replicas ready: {[r.url for r in replicas]}; submitting {args.jobs} jobs", flush=True)

        bodies = [
            {**STRATEGIES[i % len(STRATEGIES)], "prompt": PROMPTS[i % len(PROMPTS)], "background": True}
            for i in range(args.jobs)
        ]
        keys = [f"chaos-{uuid.uuid4().hex}" for _ in bodies]
        ids: list[str | None] = [None] * len(bodies)
        submit_errors: Counter[str] = Counter()
        started = time.monotonic()
        submitter = threading.Thread(target=submit_all, args=(replicas, bodies, keys, ids, submit_errors))
        submitter.start()

        kills: list[dict[str, Any]] = []
        store = redis.Redis(port=own_redis.port, decode_responses=True)
        for replica in replicas:
            time.sleep(6)
            running = [
                job_id for job_id in ids if job_id and store.hget(f"ttc:job:{job_id}", "status") == "running"
            ]
            killed_at = replica.kill()
            print(f"SIGKILL replica {replica.name} ({len(running)} jobs running overall)", flush=True)
            kills.append({"replica": replica.name, "pid": replica.pids[-1], "at": killed_at})
            replica.start()
            print(f"replica {replica.name} restarted", flush=True)
        time.sleep(3)
        redis_down = own_redis.restart(hard=args.redis_restart == "kill")
        print(f"redis {args.redis_restart}ed and restarted ({redis_down:.2f} s down)", flush=True)
        submitter.join()

        terminal = ("succeeded", "failed", "cancelled")
        deadline = time.monotonic() + args.timeout
        jobs: dict[str, dict[str, str]] = {}
        while time.monotonic() < deadline:
            try:
                jobs = {job_id: store.hgetall(f"ttc:job:{job_id}") for job_id in ids if job_id}
            except redis.ConnectionError:
                time.sleep(1)
                continue
            if all(job.get("status") in terminal for job in jobs.values()):
                break
            time.sleep(1)
        wall = time.monotonic() - started

        killed_workers = {pid for kill in kills for pid in [kill["pid"]]}
        statuses = Counter(job.get("status", "missing") for job in jobs.values())
        reasons = Counter(
            str(json.loads(job["error"]).get("error", json.loads(job["error"])).get("message"))[:120]
            for job in jobs.values()
            if job.get("status") == "failed"
        )
        lost = sum(1 for job_id in ids if job_id is None) + sum(
            1 for job in jobs.values() if job.get("status") not in terminal
        )
        extra_runs: Counter[str] = Counter()
        takeovers: list[float] = []
        for job_id in (i for i in ids if i):
            events = store.xrange(f"ttc:job:{job_id}:events")
            runs = [(int(entry.split("-")[0]) / 1000, json.loads(fields["data"])) for entry, fields in events
                    if fields["event"] == "running"]  # fmt: skip
            handed_back = any('"handed_back": true' in fields["data"] for _, fields in events)
            for (previous_at, previous), (at, _) in itertools.pairwise(runs):
                pid = int(previous["worker"].split(":")[1])
                if pid in killed_workers:
                    extra_runs["after a kill"] += 1
                    kill_at = next(kill["at"] for kill in kills if kill["pid"] == pid)
                    if at > kill_at > previous_at:
                        takeovers.append(at - kill_at)
                elif handed_back:
                    extra_runs["after a drain"] += 1
                else:
                    extra_runs["duplicate"] += 1
        # What the runs that did not finish the job spent or held reserved, as each last recorded it (the
        # service reports it in the job's usage.per_attempt; the key's quota keeps it charged).
        lost_runs = [
            json.loads(value)
            for job in jobs.values()
            for name, value in job.items()
            if name.startswith("spent_") and int(name.removeprefix("spent_")) < int(job.get("attempts", 0))
        ]
        result = {
            "benchmark": "chaos",
            "jobs": args.jobs,
            "submitted": sum(1 for job_id in ids if job_id),
            "succeeded": statuses.get("succeeded", 0),
            "failed": statuses.get("failed", 0),
            "failure_reasons": dict(reasons),
            "lost": lost,
            "runs_after_kill": extra_runs["after a kill"],
            "runs_after_drain": extra_runs["after a drain"],
            "duplicate_executions": extra_runs["duplicate"],
            "takeover_seconds": {
                "n": len(takeovers),
                "min": round(min(takeovers), 2) if takeovers else None,
                "median": round(statistics.median(takeovers), 2) if takeovers else None,
                "max": round(max(takeovers), 2) if takeovers else None,
            },
            "visibility_timeout_seconds": args.visibility,
            "redis_restart": args.redis_restart,
            "redis_restart_seconds": round(redis_down, 2),
            "lost_runs_reported": len(lost_runs),
            "lost_runs_completion_tokens": sum(int(run["completion_tokens"]) for run in lost_runs),
            "lost_runs_reserved_tokens": sum(int(run["reserved_tokens"]) for run in lost_runs),
            "submit_retries": dict(submit_errors),
            "wall_seconds": round(wall, 1),
            "jobs_per_minute": round(statuses.get("succeeded", 0) / wall * 60, 1),
        }
        print(
            f"submitted {result['submitted']}, succeeded {result['succeeded']}, failed {result['failed']} "
            f"{result['failure_reasons']}, lost {lost}; extra runs after a kill {result['runs_after_kill']}, "
            f"after a drain {result['runs_after_drain']}, duplicates {result['duplicate_executions']}; "
            f"takeover {result['takeover_seconds']} s after the kill (visibility {args.visibility} s)"
        )
        print_result(result, run_dir / "result.json")
    finally:
        for replica in replicas:
            stop(replica.process)
        stop(vllm)
        own_redis.stop()


if __name__ == "__main__":
    main()

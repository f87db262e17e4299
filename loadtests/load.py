"""Open-loop load of real test-time-compute requests, with SLO goodput, accuracy and cost per request.

    python -m loadtests.load loadtests/scenarios/interactive.toml [--url URL] [--api-key KEY] [--rates 1,2]

Built on vLLM's own serving-benchmark library (the one behind `vllm bench serve`): its arrival process
(`get_request`: Poisson, or gamma with a burstiness, open loop: arrivals never wait for completions) and its
streamed chat request function (time to first token and inter-token latency measured exactly as vLLM
measures them), so plain traffic through the service and straight to vLLM are timed by the same code. What
vLLM's benchmark lacks we add: our `/v1/solve` request, a weighted mix of request kinds, known answers
(accuracy, correct answers per second within SLO), eFLOPs and budget adherence per request, 429s counted apart
from errors, and a sweep of rates. Percentiles come from HdrHistogram (3 significant digits).

Without `--url` it starts the service itself. `--baseline` says the URL is a raw vLLM OpenAI server (only mixes
of plain chat are valid there). Results go to loadtests/results/load/<scenario>/ as JSON and CSV with plots,
and the last line printed is one JSON line of results.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
from hdrh.histogram import HdrHistogram
from vllm.benchmarks.lib.endpoint_request_func import (
    RequestFuncInput,
    async_request_openai_chat_completions,
)
from vllm.benchmarks.serve import get_request

from loadtests.fictional_facts import correct as text_correct
from loadtests.harness import RESULTS, print_result, running_service
from loadtests.scenario import Item, MixEntry, Pools, Scenario, load_scenario, rag_world
from verifiers.answers import AnswerSpec, answers_equal, extract_answer

OUT = RESULTS / "load"
NUMBER = AnswerSpec("number")
REQUEST_TIMEOUT_SECONDS = 900.0


@dataclass
class Outcome:
    """One request as the client saw it."""

    mix: str
    sent_at: float  # seconds since the rate's start
    status: str  # ok | rejected (429) | error
    e2e: float = 0.0
    ttft: float | None = None  # streamed requests only
    output_tokens: int = 0
    eflops: float | None = None
    budget_fraction: float | None = None  # max over capped axes of spent / cap
    correct: bool | None = None  # None: no known answer
    error: str = ""


# -- requests ---------------------------------------------------------------------------------------------


def ttc_of(entry: MixEntry) -> dict[str, Any]:
    ttc: dict[str, Any] = {"strategy": entry.strategy, "params": entry.params}
    if entry.budget:
        ttc["budget"] = entry.budget
    if entry.verifier:
        ttc["verifier"] = {"name": entry.verifier}
    return ttc


def is_correct(text: str | None, item: Item, extracted: bool) -> bool | None:
    """Whether an answer matches the item's known answer (`extracted`: `text` is already the answer)."""
    if item.answer is None:
        return None
    if item.answer_type == "text":
        return text_correct(text, item.answer)
    answer = text if extracted else extract_answer(text or "", NUMBER)
    return answers_equal(answer, item.answer, NUMBER)


async def send_chat(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    model: str,
    entry: MixEntry,
    item: Item,
) -> Outcome:
    """A streamed chat completion, timed by vLLM's own request function."""
    extra: dict[str, Any] = {}
    if entry.temperature is not None:
        extra["temperature"] = entry.temperature
    if entry.strategy is not None:
        extra["ttc"] = ttc_of(entry)
    request = RequestFuncInput(
        prompt=item.prompt,
        api_url=f"{base}/v1/chat/completions",
        prompt_len=0,
        output_len=entry.max_tokens,
        model=model,
        extra_body=extra or None,
        extra_headers=headers or None,
        ignore_eos=entry.ignore_eos,
        chat_messages=[{"role": "user", "content": item.prompt}],
    )
    output = await async_request_openai_chat_completions(request, session)
    if not output.success:
        rejected = output.error.strip() == "Too Many Requests"
        return Outcome(entry.name, 0.0, "rejected" if rejected else "error", error=output.error[-300:])
    return Outcome(
        entry.name,
        0.0,
        "ok",
        e2e=output.latency,
        ttft=output.ttft,
        output_tokens=output.output_tokens or 0,
        correct=is_correct(output.generated_text, item, extracted=False),
    )


def solve_body(entry: MixEntry, item: Item, corpus: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": item.prompt,
        "strategy": entry.strategy,
        "params": entry.params,
        "sampling": {"max_tokens": entry.max_tokens},
    }
    if entry.temperature is not None:
        body["sampling"]["temperature"] = entry.temperature
    if entry.budget:
        body["budget"] = entry.budget
    if entry.verifier:
        body["verifier"] = {"name": entry.verifier}
    if entry.data == "rag":
        body["rag"] = {"corpus": corpus}
        body["answer"] = {"type": "text"}
    return body


def budget_fraction(report: dict[str, Any]) -> float | None:
    """The largest spent / cap over the axes the request was capped on."""
    requested, spent = report.get("requested") or {}, report.get("spent") or {}
    fractions = [
        float(spent.get(axis) or 0.0) / float(cap) for axis, cap in requested.items() if cap and cap > 0
    ]
    return max(fractions) if fractions else None


def rejection_code(body: str) -> str:
    """A 429's error code (admission_queue_full, admission_wait_timeout, a quota's name, ...)."""
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return body[:100]


async def send_solve(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    entry: MixEntry,
    item: Item,
    corpus: str | None,
) -> Outcome:
    started = time.perf_counter()
    try:
        async with session.post(
            f"{base}/v1/solve", json=solve_body(entry, item, corpus), headers=headers
        ) as response:
            text = await response.text()
            elapsed = time.perf_counter() - started
            if response.status == 429:
                return Outcome(entry.name, 0.0, "rejected", e2e=elapsed, error=rejection_code(text))
            if response.status != 200:
                return Outcome(entry.name, 0.0, "error", e2e=elapsed, error=f"{response.status} {text[:300]}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(entry.name, 0.0, "error", e2e=time.perf_counter() - started, error=repr(exc))
    result = json.loads(text)
    usage = result.get("usage", {})
    return Outcome(
        entry.name,
        0.0,
        "ok",
        e2e=elapsed,
        output_tokens=int(usage.get("completion_tokens", 0)),
        eflops=float(usage.get("eflops", 0.0)),
        budget_fraction=budget_fraction(result.get("budget", {})),
        correct=is_correct(result.get("answer"), item, extracted=True),
    )


# -- one rate ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    base: str
    headers: dict[str, str]
    model: str
    corpus: str | None


def draw(scenario: Scenario, pools: Pools, rng: random.Random) -> tuple[MixEntry, Item]:
    entry = rng.choices(scenario.mix, weights=[e.weight for e in scenario.mix])[0]
    return entry, rng.choice(pools.items(entry))


async def send(session: aiohttp.ClientSession, target: Target, entry: MixEntry, item: Item) -> Outcome:
    if entry.endpoint == "solve":
        return await send_solve(session, target.base, target.headers, entry, item, target.corpus)
    return await send_chat(session, target.base, target.headers, target.model, entry, item)


class Progress:
    """A status line every two seconds while a rate runs."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.sent = 0
        self.outcomes: list[Outcome] = []
        self.started = time.perf_counter()

    def line(self) -> str:
        done = len(self.outcomes)
        count = {s: sum(o.status == s for o in self.outcomes) for s in ("ok", "rejected", "error")}
        return (
            f"[{self.label}] {time.perf_counter() - self.started:5.0f}s sent {self.sent} done {done} "
            f"ok {count['ok']} 429 {count['rejected']} err {count['error']} in flight {self.sent - done}"
        )

    async def show(self) -> None:
        while True:
            await asyncio.sleep(2)
            print(self.line(), flush=True)


async def run_rate(
    scenario: Scenario, rate: float, target: Target, pools: Pools, drain_seconds: float
) -> tuple[list[Outcome], float]:
    """Every request sent at one offered rate (open loop) or concurrency (closed loop), with when it was sent.
    Requests still running `drain_seconds` after the last arrival are cancelled and counted as errors."""
    rng = random.Random(f"{scenario.seed}-{rate}")
    total_seconds = scenario.warmup_seconds + scenario.duration_seconds
    label = f"{scenario.name} @ {rate:g}{' in flight' if scenario.arrival == 'concurrency' else '/s'}"
    progress = Progress(label)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.perf_counter()

        async def one(entry: MixEntry, item: Item) -> None:
            sent_at = time.perf_counter() - start
            progress.sent += 1
            outcome = await send(session, target, entry, item)
            outcome.sent_at = sent_at
            progress.outcomes.append(outcome)

        shower = asyncio.create_task(progress.show())
        tasks: list[asyncio.Task[None]] = []
        if scenario.arrival == "concurrency":

            async def worker() -> None:
                while time.perf_counter() - start < total_seconds:
                    await one(*draw(scenario, pools, rng))

            tasks = [asyncio.create_task(worker()) for _ in range(int(rate))]
        else:
            count = max(1, math.ceil(rate * total_seconds))
            planned = [draw(scenario, pools, rng) for _ in range(count)]
            burstiness = 1.0 if scenario.arrival == "poisson" else scenario.burstiness
            # vLLM's arrival process only paces the list it is given; ours holds (mix entry, prompt) pairs.
            async for request, _ in get_request(cast(Any, planned), rate, burstiness):
                entry, item = cast(tuple[MixEntry, Item], request)
                tasks.append(asyncio.create_task(one(entry, item)))
        _, pending = await asyncio.wait(tasks, timeout=drain_seconds) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        shower.cancel()
        elapsed = time.perf_counter() - start
    lost = progress.sent - len(progress.outcomes)
    outcomes = progress.outcomes + [
        Outcome("?", total_seconds, "error", error="still running at the drain deadline") for _ in range(lost)
    ]
    print(progress.line(), flush=True)
    return outcomes, elapsed


# -- statistics -------------------------------------------------------------------------------------------


def percentiles_ms(values_s: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99 of seconds, in milliseconds, from an HdrHistogram of microseconds."""
    if not values_s:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    histogram = HdrHistogram(1, 3_600_000_000, 3)
    for value in values_s:
        histogram.record_value(max(1, round(value * 1e6)))
    return {
        "p50": histogram.get_value_at_percentile(50) / 1000,
        "p90": histogram.get_value_at_percentile(90) / 1000,
        "p99": histogram.get_value_at_percentile(99) / 1000,
        "mean": histogram.get_mean_value() / 1000,
    }


def meets_slo(outcome: Outcome, scenario: Scenario) -> bool:
    if outcome.status != "ok":
        return False
    slo = scenario.slo
    if slo.e2e_ms is not None and outcome.e2e * 1000 > slo.e2e_ms:
        return False
    return not (slo.ttft_ms is not None and outcome.ttft is not None and outcome.ttft * 1000 > slo.ttft_ms)


def summarize(outcomes: list[Outcome], scenario: Scenario, window: float) -> dict[str, Any]:
    """The report of one group of requests (one mix entry, or all) at one rate; `window` is the measured
    seconds (arrivals after warm-up until the last of them finished)."""
    ok = [o for o in outcomes if o.status == "ok"]
    known = [o for o in ok if o.correct is not None]
    good = [o for o in ok if meets_slo(o, scenario)]
    eflops = [o.eflops for o in ok if o.eflops is not None]
    fractions = [o.budget_fraction for o in ok if o.budget_fraction is not None]
    return {
        "sent": len(outcomes),
        "completed": len(ok),
        "rejected_429": sum(o.status == "rejected" for o in outcomes),
        "errors": sum(o.status == "error" for o in outcomes),
        "request_throughput": len(ok) / window,
        "output_token_throughput": sum(o.output_tokens for o in ok) / window,
        "e2e_ms": percentiles_ms([o.e2e for o in ok]),
        "ttft_ms": percentiles_ms([o.ttft for o in ok if o.ttft is not None]),
        "goodput": len(good) / window,
        "correct_within_slo_per_s": sum(bool(o.correct) for o in good) / window if known else None,
        "accuracy": sum(bool(o.correct) for o in known) / len(known) if known else None,
        "tokens_per_request": sum(o.output_tokens for o in ok) / len(ok) if ok else None,
        "eflops_per_request": sum(eflops) / len(eflops) if eflops else None,
        "max_budget_fraction": max(fractions) if fractions else None,
        "error_samples": sorted({o.error for o in outcomes if o.status == "error"})[:3],
        "rejections": dict(Counter(o.error or "unknown" for o in outcomes if o.status == "rejected")),
    }


def rate_report(scenario: Scenario, rate: float, outcomes: list[Outcome], elapsed: float) -> dict[str, Any]:
    counted = [o for o in outcomes if o.sent_at >= scenario.warmup_seconds]
    window = max(elapsed - scenario.warmup_seconds, 1e-9)
    groups = {"all": counted} | {e.name: [o for o in counted if o.mix == e.name] for e in scenario.mix}
    return {
        "rate": rate,
        "window_seconds": window,
        "groups": {k: summarize(v, scenario, window) for k, v in groups.items()},
    }


# -- outputs ----------------------------------------------------------------------------------------------


def write_csv(reports: list[dict[str, Any]], path: Path) -> None:
    fields = [
        "rate", "group", "sent", "completed", "rejected_429", "errors", "request_throughput",
        "output_token_throughput", "goodput", "correct_within_slo_per_s", "accuracy", "tokens_per_request",
        "eflops_per_request", "max_budget_fraction", "e2e_p50_ms", "e2e_p90_ms", "e2e_p99_ms",
        "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms",
    ]  # fmt: skip
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for report in reports:
            for group, stats in report["groups"].items():
                row = {"rate": report["rate"], "group": group, **stats}
                for kind in ("e2e", "ttft"):
                    for p in ("p50", "p90", "p99"):
                        row[f"{kind}_{p}_ms"] = stats[f"{kind}_ms"][p]
                writer.writerow(row)


def plot(reports: list[dict[str, Any]], scenario: Scenario, path: Path) -> Path | None:
    """Latency and goodput against offered rate, and accuracy against eFLOPs per request."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups = ["all", *(e.name for e in scenario.mix)]
    rates = [r["rate"] for r in reports]
    figure, (latency, goodput, accuracy) = plt.subplots(1, 3, figsize=(16, 4.5))
    for group in groups:
        stats = [r["groups"][group] for r in reports]
        latency.plot(rates, [s["e2e_ms"]["p99"] for s in stats], marker="o", label=f"{group} p99")
        goodput.plot(rates, [s["goodput"] for s in stats], marker="o", label=group)
        if group != "all":
            points = [(s["eflops_per_request"], s["accuracy"]) for s in stats]
            points = [(x, y) for x, y in points if x is not None and y is not None]
            if points:
                accuracy.scatter(*zip(*points, strict=True), label=group)
    x_label = "requests in flight" if scenario.arrival == "concurrency" else "offered rate (requests/s)"
    latency.set(xlabel=x_label, ylabel="end-to-end latency p99 (ms)", title="Latency")
    goodput.set(xlabel=x_label, ylabel="requests/s within SLO", title="Goodput")
    accuracy.set(xlabel="eFLOPs per request", ylabel="accuracy", title="Accuracy per compute")
    accuracy.set_xscale("log")
    for axes in (latency, goodput, accuracy):
        axes.legend(fontsize=7)
        axes.grid(alpha=0.3)
    figure.suptitle(f"{scenario.name}: {scenario.description}"[:120])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# -- the run ----------------------------------------------------------------------------------------------


async def first_model(base: str, headers: dict[str, str]) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/v1/models", headers=headers) as r:
        r.raise_for_status()
        return str((await r.json())["data"][0]["id"])


async def make_corpus(base: str, headers: dict[str, str]) -> str:
    """The RAG mix's corpus: the fictional world's documents, ingested before any traffic."""
    world = rag_world()
    name = f"load-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
        async with session.post(f"{base}/v1/corpora", json={"name": name}, headers=headers) as r:
            r.raise_for_status()
        body = {"documents": world.documents, "demonstrations": world.demonstrations}
        async with session.post(f"{base}/v1/corpora/{name}/documents", json=body, headers=headers) as r:
            r.raise_for_status()
    return name


async def drop_corpus(base: str, headers: dict[str, str], name: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.delete(f"{base}/v1/corpora/{name}", headers=headers),
    ):
        pass


async def run(
    scenario: Scenario, base: str, api_key: str | None, drain_seconds: float
) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    model = await first_model(base, headers)
    corpus = await make_corpus(base, headers) if any(e.data == "rag" for e in scenario.mix) else None
    target = Target(base, headers, model, corpus)
    pools = Pools(scenario.seed)
    reports = []
    try:
        for rate in scenario.rates:
            outcomes, elapsed = await run_rate(scenario, rate, target, pools, drain_seconds)
            reports.append(rate_report(scenario, rate, outcomes, elapsed))
    finally:
        if corpus is not None:
            await drop_corpus(base, headers, corpus)
    return reports


def headline(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON line: per rate, the overall figures an operator reads first."""
    rows = []
    for report in reports:
        stats = report["groups"]["all"]
        rows.append(
            {
                "rate": report["rate"],
                "sent": stats["sent"],
                "completed": stats["completed"],
                "rejected_429": stats["rejected_429"],
                "errors": stats["errors"],
                "rps": round(stats["request_throughput"], 4),
                "tok_s": round(stats["output_token_throughput"], 2),
                "e2e_p50_ms": stats["e2e_ms"]["p50"],
                "e2e_p99_ms": stats["e2e_ms"]["p99"],
                "ttft_p99_ms": stats["ttft_ms"]["p99"],
                "goodput": round(stats["goodput"], 4),
                "correct_within_slo_per_s": stats["correct_within_slo_per_s"],
                "accuracy": stats["accuracy"],
                "eflops_per_request": stats["eflops_per_request"],
                "max_budget_fraction": stats["max_budget_fraction"],
            }
        )
    peak = max((row["goodput"] for row in rows), default=0.0)
    return {
        "per_rate": rows,
        "peak_goodput": peak,
        "last_goodput_over_peak": rows[-1]["goodput"] / peak if peak else None,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.load",
        description="Open-loop load of test-time-compute requests: latency percentiles, goodput within SLO, "
        "accuracy and eFLOPs per request, at every offered rate of a scenario.",
        epilog="Scenario files: loadtests/scenarios/*.toml (the README's 'Load testing' section explains "
        "every field). Without --url the service is started here and stopped at the end.",
    )
    parser.add_argument("scenario", type=Path, help="Scenario TOML file.")
    parser.add_argument("--url", help="Base URL of a running service (or of raw vLLM with --baseline).")
    parser.add_argument("--api-key", help="Bearer key sent with every request.")
    parser.add_argument(
        "--baseline", action="store_true", help="The URL is a raw vLLM OpenAI server: plain chat mixes only."
    )
    parser.add_argument("--rates", help="Comma-separated rates overriding the scenario's sweep.")
    parser.add_argument("--duration", type=float, help="Measured seconds per rate, overriding the scenario.")
    parser.add_argument("--warmup", type=float, help="Warm-up seconds per rate, overriding the scenario.")
    parser.add_argument(
        "--drain", type=float, default=300.0, help="Seconds to wait for requests after the last arrival."
    )
    parser.add_argument("--out", type=Path, help="Results folder (default loadtests/results/load/<name>).")
    parser.add_argument("--label", default="", help="Suffix of the result files (e.g. service, vllm).")
    return parser.parse_args(argv)


def configured(args: argparse.Namespace) -> Scenario:
    scenario = load_scenario(args.scenario)
    changes: dict[str, Any] = {}
    if args.rates:
        changes["rates"] = [float(rate) for rate in args.rates.split(",")]
    if args.duration is not None:
        changes["duration_seconds"] = args.duration
    if args.warmup is not None:
        changes["warmup_seconds"] = args.warmup
    scenario = Scenario.model_validate(scenario.model_dump() | changes)
    if args.baseline and scenario.needs_ttc:
        raise SystemExit(f"{args.scenario}: --baseline (raw vLLM) takes only plain chat mixes (no strategy).")
    return scenario


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    scenario = configured(args)
    out = args.out or OUT / scenario.name
    out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.label}" if args.label else ""
    with running_service(args.url, out) as url:
        reports = asyncio.run(run(scenario, url, args.api_key, args.drain))
    (out / f"report{suffix}.json").write_text(
        json.dumps({"scenario": scenario.model_dump(), "reports": reports}, indent=2)
    )
    write_csv(reports, out / f"report{suffix}.csv")
    picture = plot(reports, scenario, out / f"plots{suffix}.png")
    for report in reports:
        for group, stats in report["groups"].items():
            print(
                f"rate {report['rate']:g} {group:>12}: sent {stats['sent']} ok {stats['completed']} "
                f"429 {stats['rejected_429']} err {stats['errors']} | {stats['request_throughput']:.3f} req/s "
                f"{stats['output_token_throughput']:.1f} tok/s | e2e p50/p99 {stats['e2e_ms']['p50']}/"
                f"{stats['e2e_ms']['p99']} ms ttft p99 {stats['ttft_ms']['p99']} ms | goodput "
                f"{stats['goodput']:.3f}/s acc {stats['accuracy']} eflops/req {stats['eflops_per_request']}"
            )
    result = {"benchmark": "load", "scenario": scenario.name, "label": args.label, **headline(reports)}
    result["files"] = {"json": str(out / f"report{suffix}.json"), "plot": str(picture) if picture else None}
    print_result(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

"""RAG benchmark: accuracy versus effective context length for no retrieval, DRAG (k = 1, 3, 5, 10, and with
demonstrations) and IterDRAG side by side on a fictional-facts corpus the model cannot know, one- and two-hop
questions reported apart; then the allocation model refitted on these runs (strategies/rag_allocation.json:
the measured grid plus the fitted form), and the DEFAULTS a user gets without tuning measured against every
fixed configuration: `rag` with only a corpus, `auto` with only a corpus (both with no sampling or answer
options: the strategies' own defaults), and the best fixed configuration at the old default temperature 0.8
(the evidence for greedy RAG defaults).

Fixed configurations are measured on `--fit-split` (default: train) and fitted there; with
`--fit-split test` (the same split as the report) the fit is in-sample.

    .venv/bin/python -m loadtests.rag [--quick] [--questions 80] [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from loadtests.fictional_facts import Question, build, correct, split
from loadtests.harness import ROOT, print_result, running_service
from strategies.rag_allocation import FIT_FILE, AllocationModel, CostShape, Measurement, Theta, choose, fit

RESULTS = ROOT / "loadtests" / "results" / "rag"
FIXED = [  # (name, strategy, k, m, n)
    ("none", "drag", 0, 0, 0),
    ("drag k=1", "drag", 1, 0, 0),
    ("drag k=3", "drag", 3, 0, 0),
    ("drag k=5", "drag", 5, 0, 0),
    ("drag k=10", "drag", 10, 0, 0),
    ("drag k=3 m=2", "drag", 3, 2, 0),
    ("iterdrag k=1 n=2", "iterdrag", 1, 0, 2),
    ("iterdrag k=3 n=1", "iterdrag", 3, 0, 1),
    ("iterdrag k=3 n=2", "iterdrag", 3, 0, 2),
    ("iterdrag k=3 n=3", "iterdrag", 3, 0, 3),
]
BUDGETS = [150, 300, 600, 1200, 2500, 5000]


def fixed_body(config: tuple[str, str, int, int, int], corpus: str) -> dict[str, Any]:
    _, strategy, k, m, n = config
    return {
        "strategy": strategy,
        "rag": {"corpus": corpus, "k": k, "demos": m, "iterations": n},
        "answer": {"type": "text"},
        "sampling": {"max_tokens": 32, "temperature": 0},
    }


async def ask(
    client: httpx.AsyncClient, gate: asyncio.Semaphore, body: dict[str, Any], q: Question
) -> dict[str, Any]:
    async with gate:
        try:
            response = await client.post("/v1/solve", json={"prompt": q.question, **body})
        except httpx.TransportError:  # a pooled connection the server had just closed: send once more
            response = await client.post("/v1/solve", json={"prompt": q.question, **body})
    if response.status_code != 200:
        return {"ok": False, "context": 0, "status": response.status_code, "empty": False}
    result = response.json()
    silent_empty = result["answer"] is None and not result["text"] and not result["abstained"]
    return {
        "ok": correct(result["answer"], q.answer),
        "context": int(result["usage"]["prompt_tokens"]),
        "status": 200,
        "empty": silent_empty,
        "allocation": result["details"].get("allocation"),
        "params": result["params"],
    }


async def run_config(
    client: httpx.AsyncClient,
    gate: asyncio.Semaphore,
    name: str,
    body: dict[str, Any],
    questions: list[Question],
) -> dict[str, Any]:
    began = time.monotonic()
    outcomes = await asyncio.gather(*(ask(client, gate, body, q) for q in questions))
    by_hops = {
        hops: sum(o["ok"] for o, q in zip(outcomes, questions, strict=True) if q.hops == hops)
        / max(1, sum(q.hops == hops for q in questions))
        for hops in (1, 2)
    }
    row = {
        "config": name,
        "accuracy": sum(o["ok"] for o in outcomes) / len(outcomes),
        "one_hop": by_hops[1],
        "two_hop": by_hops[2],
        "context_tokens": statistics.mean(o["context"] for o in outcomes),
        "errors": sum(o["status"] != 200 for o in outcomes),
        "silent_empty": sum(o["empty"] for o in outcomes),
        "seconds": time.monotonic() - began,
        "chosen": outcomes[0].get("params"),
    }
    print(
        f"  {name:<22} accuracy {row['accuracy']:5.1%} (1-hop {by_hops[1]:5.1%}, 2-hop {by_hops[2]:5.1%})  "
        f"context {row['context_tokens']:7.0f} tokens  {row['seconds']:6.1f} s  errors {row['errors']}  "
        f"silent empty {row['silent_empty']}",
        flush=True,
    )
    return row


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    world = build(args.seed, args.people, args.towns, args.questions, demos=4)
    report_questions = split(world, "test")
    fit_questions = split(world, args.fit_split)
    corpus = f"bench-rag-{uuid.uuid4().hex[:8]}"
    gate = asyncio.Semaphore(args.concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=900) as client:
        (await client.post("/v1/corpora", json={"name": corpus})).raise_for_status()
        started = time.monotonic()
        for start in range(0, len(world.documents), 500):
            batch = world.documents[start : start + 500]
            body = {"documents": batch, "demonstrations": world.demonstrations if start == 0 else []}
            (await client.post(f"/v1/corpora/{corpus}/documents", json=body)).raise_for_status()
        print(
            f"corpus: {len(world.documents)} documents in {time.monotonic() - started:.1f} s; fit on "
            f"{args.fit_split} ({len(fit_questions)} questions), report on test ({len(report_questions)})",
            flush=True,
        )
        try:
            print(f"fixed configurations on {args.fit_split}:")
            fit_rows = []
            for config in FIXED:
                row = await run_config(client, gate, config[0], fixed_body(config, corpus), fit_questions)
                fit_rows.append(row | {"k": config[2], "m": config[3], "n": config[4]})
            model = refit(fit_rows, save=not args.no_save and not args.quick)
            report_rows = fit_rows
            if args.fit_split != "test":
                print("fixed configurations on test:")
                report_rows = []
                for config in FIXED:
                    row = await run_config(
                        client, gate, config[0], fixed_body(config, corpus), report_questions
                    )
                    report_rows.append(row | {"k": config[2], "m": config[3], "n": config[4]})
            print("defaults on test (the refitted model):")
            best = max(fit_rows, key=lambda row: row["accuracy"])
            best_config = next(config for config in FIXED if config[0] == best["config"])
            warm = fixed_body(best_config, corpus) | {"sampling": {"max_tokens": 32, "temperature": 0.8}}
            defaults = [
                await run_config(
                    client,
                    gate,
                    "rag (defaults)",
                    {"strategy": "rag", "rag": {"corpus": corpus}},
                    report_questions,
                ),
                await run_config(
                    client, gate, "auto (defaults)", {"rag": {"corpus": corpus}}, report_questions
                ),
                await run_config(client, gate, f"{best['config']} t=0.8", warm, report_questions),
            ]
        finally:
            await client.delete(f"/v1/corpora/{corpus}")
    return {
        "fit_rows": fit_rows,
        "rows": report_rows,
        "defaults": defaults,
        "model": model,
        "documents": len(world.documents),
        "questions": len(report_questions),
        "fit_questions": len(fit_questions),
    }


def refit(rows: list[dict[str, Any]], save: bool) -> AllocationModel:
    """The allocation model on the measured rows: the grid itself plus the fitted form between its points."""
    by = {row["config"]: row for row in rows}
    base = by["none"]["context_tokens"]
    doc_tokens = max(1.0, (by["drag k=10"]["context_tokens"] - base) / 10)
    demo_tokens = max(
        1.0, (by["drag k=3 m=2"]["context_tokens"] - by["drag k=3"]["context_tokens"]) / 2 - 3 * doc_tokens
    )
    cost = CostShape(base_tokens=base, doc_tokens=doc_tokens, demo_tokens=demo_tokens, step_tokens=30.0)
    measured = [
        Measurement(Theta(row["k"], row["m"], row["n"]), row["accuracy"], row["context_tokens"], 0)
        for row in rows
    ]
    model = fit(measured, cost)
    if save:
        model.save()
    return model


def allocation(model: AllocationModel, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Predicted (fitted form) versus measured, and per context budget the model's choice versus the best
    measured configuration that fits."""
    predicted = [
        {
            "config": row["config"],
            "measured": row["accuracy"],
            "predicted": model.fitted(Theta(row["k"], row["m"], row["n"])),
        }
        for row in rows
    ]
    by_theta = {(row["k"], row["m"], row["n"]): row for row in rows}
    budgets = []
    for budget in BUDGETS:
        fitting = [row for row in rows if row["context_tokens"] <= budget]
        if not fitting:
            continue
        best = max(fitting, key=lambda row: row["accuracy"])
        chosen = choose(model, budget)
        got = by_theta.get((chosen.k, chosen.m, chosen.n))
        budgets.append(
            {
                "budget": budget,
                "best": best["config"],
                "best_accuracy": best["accuracy"],
                "chosen": got["config"] if got else str(chosen),
                "chosen_accuracy": got["accuracy"] if got else None,
            }
        )
    return {"predicted": predicted, "budgets": budgets}


def plot(rows: list[dict[str, Any]]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for family, marker in (("none", "s"), ("drag", "o"), ("iterdrag", "^")):
        chosen = [row for row in rows if row["config"].startswith(family)]
        axes.plot(
            [row["context_tokens"] for row in chosen],
            [row["accuracy"] for row in chosen],
            marker,
            label=family,
        )
        for row in chosen:
            axes.annotate(row["config"], (row["context_tokens"], row["accuracy"]), fontsize=7)
    axes.set_xscale("log")
    axes.set_xlabel("effective context length (input tokens over all calls, mean per question)")
    axes.set_ylabel("accuracy (test split)")
    axes.legend()
    path = RESULTS / "accuracy_vs_context.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="use this running service instead of starting one")
    parser.add_argument("--quick", action="store_true", help="a small world and 16 questions (a few minutes)")
    parser.add_argument("--people", type=int, default=360, help="person documents (default 360)")
    parser.add_argument("--towns", type=int, default=160, help="town documents (default 160)")
    parser.add_argument(
        "--questions",
        type=int,
        default=80,
        help="questions in all, half train and half test, half of each two-hop (default 80)",
    )
    parser.add_argument("--fit-split", choices=("train", "test"), default="train", help="where to fit")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fictional world")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--no-save", action="store_true", help=f"do not rewrite {FIT_FILE.name}")
    args = parser.parse_args()
    if args.quick:
        args.people, args.towns, args.questions = 60, 30, 16
    with running_service(args.url, RESULTS) as url:
        measured = asyncio.run(measure(url, args))
    fitted = allocation(measured["model"], measured["fit_rows"])
    print(
        f"\nallocation model ({'refitted' if not args.no_save else 'not saved'}): fitted form versus measured"
    )
    for row in fitted["predicted"]:
        print(f"  {row['config']:<22} measured {row['measured']:5.1%}  fitted {row['predicted']:5.1%}")
    print("\nper context budget: best measured versus the model's choice")
    for row in fitted["budgets"]:
        chosen = row["chosen_accuracy"]
        print(
            f"  {row['budget']:>6} tokens  best {row['best']:<22} {row['best_accuracy']:5.1%}  chosen "
            f"{row['chosen']:<22} {'-' if chosen is None else f'{chosen:5.1%}'}"
        )
    rows, defaults = measured["rows"], measured["defaults"]
    best = max(rows, key=lambda row: row["accuracy"])
    best_drag_two_hop = max(row["two_hop"] for row in rows if row["config"].startswith("drag"))
    best_iter_two_hop = max(row["two_hop"] for row in rows if row["config"].startswith("iterdrag"))
    print(f"\nbest fixed configuration on test: {best['config']} {best['accuracy']:.1%}")
    for row in defaults[:2]:
        gap = (best["accuracy"] - row["accuracy"]) * 100
        print(f"  {row['config']:<22} {row['accuracy']:5.1%}: {gap:+.1f} points below the best")
    print(f"two-hop: best IterDRAG {best_iter_two_hop:.1%}, best DRAG {best_drag_two_hop:.1%}")
    figure = plot(rows)
    summary = {
        "benchmark": "rag",
        "documents": measured["documents"],
        "test_questions": measured["questions"],
        "fit_questions": measured["fit_questions"],
        "fit_split": args.fit_split,
        "configs": {
            row["config"]: {
                "accuracy": round(row["accuracy"], 4),
                "one_hop": round(row["one_hop"], 4),
                "two_hop": round(row["two_hop"], 4),
                "context_tokens": round(row["context_tokens"], 1),
            }
            for row in [*rows, *defaults]
        },
        "best_fixed": best["config"],
        "defaults_within_5_points": all(best["accuracy"] - row["accuracy"] <= 0.05 for row in defaults[:2]),
        "iterdrag_two_hop": round(best_iter_two_hop, 4),
        "drag_two_hop": round(best_drag_two_hop, 4),
        "silent_empty": sum(row["silent_empty"] for row in [*rows, *defaults]),
        "figure": str(figure) if figure else None,
    }
    print_result(summary)


if __name__ == "__main__":
    main()

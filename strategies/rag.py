"""Retrieval-augmented generation over a corpus (Yue et al., papers.md §5): DRAG, IterDRAG, and `rag`, which
picks (k, m, n) for the budget with the fitted allocation model and then runs one of them.

DRAG: k retrieved documents in reverse rank order (best nearest the question) after m demonstrations that
each carry their own k documents; one call. IterDRAG: the model writes "Follow up: <sub-question>", we
retrieve k documents for it and it writes "Intermediate answer: ..."; at most n rounds, then
"So the final answer is: ...". The format is enforced by prefilling every label ourselves and stopping each
call at the end of its line, so the only thing the model decides is whether to ask another follow-up (any
line that is not a follow-up ends the loop; the first follow-up, if not a question, becomes the question). The prompt only ever grows, so every call reuses the previous
one's prefix in the engine's cache. Budget: `context_tokens` caps the effective context length.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from service.runtime.budget import BudgetTracker
from service.runtime.engine import Engine, SamplingSpec
from service.runtime.errors import BudgetExhausted, InvalidRequest
from strategies.base import Candidate, Passage, RagContext, Result, Task
from strategies.rag_allocation import AllocationModel, Theta, choose
from verifiers.answers import extract_answer
from verifiers.base import Verifier

INSTRUCTIONS = "Answer the question using the documents. Give a short answer: a name, a place or a number."
ITER_INSTRUCTIONS = (
    INSTRUCTIONS + " If the documents do not answer it directly, ask one simpler question at a time as"
    " 'Follow up: <question>'; documents for it follow, then write 'Intermediate answer: <answer>'. End with"
    " 'So the final answer is: <answer>'."
)
LINE_TOKENS = 40
FINAL = re.compile(r"final answer is:?", re.IGNORECASE)
DEFAULT_THETA = Theta(k=5, m=0, n=0)


def context_of(task: Task) -> RagContext:
    if task.rag is None:
        raise InvalidRequest('This strategy needs `rag`: {"corpus": ...}.', param="rag")
    return task.rag


def format_documents(passages: Sequence[Passage]) -> str:
    """Best last: the documents are listed in reverse rank order, so the best one sits nearest the question."""
    lines = [f"[{len(passages) - rank}] {p.title}: {p.text}" for rank, p in enumerate(reversed(passages))]
    return "Documents:\n" + "\n".join(lines) if lines else ""


async def demonstrations(rag: RagContext, m: int, k: int) -> list[str]:
    """m worked examples, each with its own k retrieved documents."""
    blocks = []
    for question, answer in await rag.retriever.demonstrations(m):
        passages = await rag.retriever.search(question, k) if k > 0 else []
        blocks.append(f"{format_documents(passages)}\nQuestion: {question}\nSo the final answer is: {answer}")
    return blocks


def line_spec(task: Task, max_tokens: int = LINE_TOKENS) -> SamplingSpec:
    return dataclasses.replace(
        task.sampling, n=1, max_tokens=min(max_tokens, task.sampling.max_tokens), stop=("\n",)
    )


def build_prompt(
    engine: Engine,
    task: Task,
    demos: list[str],
    passages: Sequence[Passage],
    instructions: str = INSTRUCTIONS,
) -> str:
    """The chat prompt, shrunk (fewer documents, then fewer demonstrations) to leave room to answer."""
    passages, demos = list(passages), list(demos)
    while True:
        content = "\n\n".join(
            [instructions, *demos, f"{format_documents(passages)}\nQuestion: {task.question}".strip()]
        )
        prompt = engine.render_chat([{"role": "user", "content": content}])
        room = engine.max_model_len - len(engine.encode(prompt)) - 8 * LINE_TOKENS
        if room >= 0 or (not passages and not demos):
            return prompt
        if demos:
            demos.pop()
        else:
            passages.pop()  # the worst-ranked one


async def drag(task: Task, engine: Engine, budget: BudgetTracker, theta: Theta) -> Result:
    rag = context_of(task)
    demos = await demonstrations(rag, theta.m, theta.k)
    passages = await rag.retriever.search(task.question, theta.k) if theta.k > 0 else []
    prompt = build_prompt(engine, task, demos, passages) + "So the final answer is:"
    generation = await budget.generate(engine, prompt, line_spec(task))
    final = generation.samples[0].text.strip()
    candidate = Candidate(
        final, extract_answer(final, task.answer), generation.samples[0].tokens, "stop", votes=1
    )
    return Result(
        text=final,
        answer=candidate.answer,
        candidates=[candidate],
        params={"mode": "drag", "k": theta.k, "demos": len(demos), "iterations": 0},
        details={"documents": [p.title for p in passages]},
    )


async def iterdrag(task: Task, engine: Engine, budget: BudgetTracker, theta: Theta) -> Result:
    rag = context_of(task)
    demos = await demonstrations(rag, theta.m, theta.k)
    passages = await rag.retriever.search(task.question, theta.k) if theta.k > 0 else []
    ids = engine.encode(build_prompt(engine, task, demos, passages, ITER_INSTRUCTIONS))
    steps: list[dict[str, Any]] = []
    tokens = 0

    async def line(suffix: str) -> str:
        """Append `suffix` to the growing prompt, then let the model write one line."""
        nonlocal ids, tokens
        ids = ids + engine.encode(suffix)
        generation = await budget.generate(engine, ids, line_spec(task), prompt_tokens=len(ids))
        text = generation.samples[0].text
        tokens += generation.samples[0].tokens
        ids = ids + engine.encode(text)
        return text.strip()

    final: str | None = None
    try:
        for round_ in range(theta.n):
            if round_ > 0:  # the model's choice: another follow-up, or done
                decision = await line("\n")
                if FINAL.search(decision):
                    final = FINAL.split(decision, maxsplit=1)[1].strip()
                    break
                if not decision.lower().startswith("follow up:"):
                    break
                sub_question = decision.split(":", 1)[1].strip()
            else:  # the first follow-up is prefilled
                before = ids
                sub_question = await line("Follow up:")
                if "?" not in sub_question or FINAL.search(sub_question):
                    # Not a question (a small model often answers at once): ask the question itself, so
                    # that n >= 1 always means at least one retrieval round.
                    sub_question = task.question
                    ids = before + engine.encode(f"Follow up: {sub_question}")
            if not sub_question:
                break
            found = await rag.retriever.search(sub_question, max(theta.k, 1))
            remaining = engine.max_model_len - len(ids) - 4 * LINE_TOKENS
            shown = list(found)
            while shown and len(engine.encode(format_documents(shown))) > remaining - 200:
                shown.pop()
            answer = await line(f"\n{format_documents(shown)}\nIntermediate answer:")
            steps.append({"follow_up": sub_question, "documents": [p.title for p in shown], "answer": answer})
            task.report({"event": "iteration", "round": round_, "follow_up": sub_question, "answer": answer})
        if final is None:
            final = await line("\nSo the final answer is:")
    except BudgetExhausted:
        if not steps:
            raise
        final = steps[-1]["answer"]
    candidate = Candidate(final, extract_answer(final, task.answer), tokens, "stop", votes=1)
    return Result(
        text=final,
        answer=candidate.answer,
        candidates=[candidate],
        params={"mode": "iterdrag", "k": theta.k, "demos": len(demos), "iterations": len(steps)},
        details={"documents": [p.title for p in passages], "steps": steps},
    )


async def run_drag(task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker) -> Result:
    rag = context_of(task)
    theta = Theta(rag.k if rag.k is not None else DEFAULT_THETA.k, rag.demos or 0, 0)
    return await drag(task, engine, budget, theta)


async def run_iterdrag(
    task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker
) -> Result:
    rag = context_of(task)
    theta = Theta(
        rag.k if rag.k is not None else DEFAULT_THETA.k,
        rag.demos or 0,
        rag.iterations if rag.iterations is not None else 2,
    )
    return await iterdrag(task, engine, budget, theta)


async def run(task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker) -> Result:
    """`rag`: the allocation model fills in whatever of k, demos and iterations the request left out."""
    rag = context_of(task)
    model = AllocationModel.load()
    if model is None:
        theta = Theta(
            rag.k if rag.k is not None else DEFAULT_THETA.k,
            rag.demos if rag.demos is not None else DEFAULT_THETA.m,
            rag.iterations if rag.iterations is not None else DEFAULT_THETA.n,
        )
        predicted = None
    else:
        available = len(await rag.retriever.demonstrations(16))
        theta = choose(model, budget.limits.context_tokens, rag.k, rag.demos, rag.iterations, available)
        predicted = model.predict(theta)
    result = await (drag if theta.n == 0 else iterdrag)(task, engine, budget, theta)
    result.details["allocation"] = {
        "k": theta.k,
        "demos": theta.m,
        "iterations": theta.n,
        "predicted": predicted,
    }
    return result

"""Retrieval-augmented generation over a corpus (Yue et al., papers.md §5): DRAG, IterDRAG, and `rag`, which
picks (k, m, n) for the budget with the allocation model (strategies/rag_allocation.py) and runs one of them.

DRAG: k retrieved documents in reverse rank order (best nearest the question) after m demonstrations that
each carry their own k documents; one call. IterDRAG (Self-Ask with retrieval): the model writes
"Follow up: <sub-question>", we retrieve k documents for that sub-question and it writes
"Intermediate answer: ..."; at most n rounds, then "So the final answer is: ...". Every label is prefilled,
each call stops at the end of its line, and vLLM's structured outputs (a regex) keep each line in its format;
a later follow-up must name the previous intermediate answer (the bridge entity of a two-hop question), so it
retrieves the second hop's document. Unlike Yue et al., no documents precede the first follow-up (they lead a
small model to ask about the second hop's entity first), and every answer is a span of the documents just
shown, never starting with the bridge it asked about (else the model copies the bridge or drifts off them).
The prompt only ever grows, so every call reuses the previous one's prefix in the engine's cache. Budget: `context_tokens` caps the effective context length.

Sampling: a RAG answer is a short fact, so a request that sets no sampling gets `SAMPLING_DEFAULTS` (greedy,
32 tokens), the settings every configuration in the benchmark was measured with.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from service.runtime.budget import BudgetTracker
from service.runtime.engine import Engine, SamplingSpec, StructuredOutput
from service.runtime.errors import BudgetExhausted, InvalidRequest
from strategies.base import Candidate, Passage, RagContext, Result, Task
from strategies.rag_allocation import AllocationModel, Measurement, Theta, choose
from verifiers.answers import extract_answer
from verifiers.base import Verifier

INSTRUCTIONS = "Answer the question using the documents. Give a short answer: a name, a place or a number."
ITER_INSTRUCTIONS = (
    INSTRUCTIONS
    + " Ask one simple question at a time as 'Follow up: <question>'; documents for it follow, then"
    " write 'Intermediate answer: <answer>'. A follow-up that depends on an earlier answer names that answer."
    " End with 'So the final answer is: <answer>'."
)
# Self-Ask's worked example with retrieval (Press et al.; Yue et al. give IterDRAG decomposed demonstrations
# like it), about an invented world: how a two-hop question decomposes, how the answer is read off the
# documents, and how the second follow-up names the bridge entity the first one found.
SELF_ASK_EXAMPLE = (
    "Example:\nQuestion: Which lake lies next to the village where Oren Vask was born?\n"
    "Follow up: In which village was Oren Vask born?\n"
    "Documents:\n[1] Oren Vask: Oren Vask is a potter. Oren Vask was born in 1950 in the village of Delmarsh.\n"
    "Intermediate answer: Delmarsh\n"
    "Follow up: Which lake lies next to Delmarsh?\n"
    "Documents:\n[1] Delmarsh: Delmarsh is a village on the shore of Lake Quill, known for its boats.\n"
    "Intermediate answer: Lake Quill\n"
    "So the final answer is: Lake Quill"
)
LINE_TOKENS = 40
FINAL = re.compile(r"final answer is:?", re.IGNORECASE)
DEFAULT_THETA = Theta(k=5, m=0, n=0)
# Sampling a RAG request gets when it names none (the benchmark's settings, loadtests/rag.py): the answer is
# a short fact read off the documents, so greedy decoding and one short line.
SAMPLING_DEFAULTS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 32}
# One follow-up question on one line, opening with a question word (else a small model answers instead).
OPENING = r"(In which|In what|Which|What|Who|Whom|Whose|Where|When|How|Is|Are|Was|Were|Did|Does|Do)"
QUESTION = rf" {OPENING} [^\n?]{{2,100}}\?"
ANSWER = r" [^\n.?]{1,60}"  # a short answer: a name, a place or a number, not a sentence
BRIDGE_WORDS = 6  # an intermediate answer longer than this is a sentence, not an entity to carry
SPAN_WORDS = 4  # longest span of the documents an intermediate answer may be ("the town of Kelvadi")


def bridge_entity(answer: str | None) -> str:
    """An intermediate answer as an entity a later line can name or avoid; "" when it is a sentence."""
    entity = answer.strip().rstrip(".") if answer else ""
    return entity if len(entity.split()) <= BRIDGE_WORDS else ""


def follow_up_pattern(bridge: str | None) -> str:
    """Structured output for a later follow-up: a question that names the bridge entity just found (the
    previous intermediate answer), so that the next retrieval looks for it."""
    entity = bridge_entity(bridge)
    if entity and "?" not in entity:
        return rf" {OPENING} [^\n?]{{0,100}}{re.escape(entity)}[^\n?]{{0,100}}\?"
    return QUESTION  # no short answer to carry: any question


def document_spans(passages: Sequence[Passage], max_words: int = SPAN_WORDS) -> list[str]:
    """Every run of 1 to `max_words` words inside one sentence of the documents' titles and texts, in order
    of first appearance: the answers an intermediate hop can read off what it was shown."""
    spans: dict[str, None] = {}
    for passage in passages:
        for sentence in re.split(r"(?<=[.!?;])\s+|\n", f"{passage.title}. {passage.text}"):
            words = [word.strip(".,;:!?()\"'") for word in sentence.split()]
            words = [word for word in words if word]
            for start in range(len(words)):
                for end in range(start + 1, min(start + max_words, len(words)) + 1):
                    spans.setdefault(" ".join(words[start:end]))
    return list(spans)


def answer_pattern(avoid: str | None, passages: Sequence[Passage] = ()) -> str:
    """An intermediate answer: a span of the documents just shown (a small model otherwise drifts into
    words that are in none of them) that does not start with `avoid`, the bridge entity the hop was asked
    about (a small model copies it). With no documents, any short answer not starting with `avoid`."""
    carry = bridge_entity(avoid)
    first_word = carry.split()[0].lower() if carry else None
    spans = [
        span for span in document_spans(passages) if not (first_word and span.lower().startswith(first_word))
    ]
    if spans:
        return " (" + "|".join(re.escape(span) for span in spans) + ")"
    if not carry:
        return ANSWER
    other = "|".join(re.escape(carry[:i]) + f"[^{re.escape(carry[i])}\\n.?]" for i in range(len(carry)))
    return rf" ({other})[^\n.?]{{0,60}}"


def decision_pattern(bridge: str | None) -> str:
    """Structured output for the model's choice after an intermediate answer: another follow-up (naming the
    bridge) or the final answer."""
    return rf"(Follow up:{follow_up_pattern(bridge)}|So the final answer is:{ANSWER})"


def same_question(follow_up: str, question: str) -> bool:
    """Whether a follow-up is the question itself (then its answer is the final one), not a sub-question."""
    words = set(re.findall(r"\w+", follow_up.lower()))
    original = set(re.findall(r"\w+", question.lower()))
    return bool(words) and len(words & original) / len(words | original) >= 0.8


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


def line_spec(task: Task, max_tokens: int = LINE_TOKENS, pattern: str | None = None) -> SamplingSpec:
    """One line of output; with `pattern`, a regular expression the engine keeps the line inside."""
    return dataclasses.replace(
        task.sampling,
        n=1,
        max_tokens=min(max_tokens, task.sampling.max_tokens),
        stop=("\n",),
        structured=StructuredOutput(regex=pattern) if pattern is not None else None,
    )


def build_prompt(
    engine: Engine,
    task: Task,
    demos: list[str],
    passages: Sequence[Passage],
    instructions: str = INSTRUCTIONS,
    example: str | None = None,
) -> str:
    """The chat prompt, shrunk (fewer documents, then fewer demonstrations) to leave room to answer."""
    passages, demos = list(passages), list(demos)
    while True:
        content = "\n\n".join(
            [
                instructions,
                *([example] if example else []),
                *demos,
                f"{format_documents(passages)}\nQuestion: {task.question}".strip(),
            ]
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
    """Self-Ask with retrieval. Every label is prefilled or forced by a structured-output regex, so the model
    only writes the follow-up questions and the answers: round one asks a question, each later round either
    asks one naming the previous intermediate answer (the bridge entity) or gives the final answer. Each
    follow-up is retrieved for itself, not the original question."""
    rag = context_of(task)
    demos = await demonstrations(rag, theta.m, theta.k)
    # No documents for the whole question before the first follow-up (Yue et al. show them): retrieval for a
    # two-hop question finds the second hop's document (the town, by its river), and a small model then asks
    # about the entity it sees instead of the one the question starts from.
    ids = engine.encode(build_prompt(engine, task, demos, [], ITER_INSTRUCTIONS, SELF_ASK_EXAMPLE))
    steps: list[dict[str, Any]] = []
    tokens = 0

    async def line(suffix: str, pattern: str | None = None) -> str:
        """Append `suffix` to the growing prompt, then let the model write one line."""
        nonlocal ids, tokens
        ids = ids + engine.encode(suffix)
        spec = line_spec(task, pattern=pattern)
        generation = await budget.generate(engine, ids, spec, prompt_tokens=len(ids))
        text = generation.samples[0].text
        tokens += generation.samples[0].tokens
        ids = ids + engine.encode(text)
        return text.strip()

    final: str | None = None
    last_shown: list[Passage] = []
    try:
        for round_ in range(theta.n):
            if round_ == 0:  # the first follow-up is prefilled: one retrieval round at least
                sub_question = await line("Follow up:", QUESTION)
            elif round_ == 1 and not same_question(steps[-1]["follow_up"], task.question):
                # The first follow-up was a sub-question, so its answer is a bridge, not the answer: ask the
                # next hop, naming it.
                sub_question = await line("\nFollow up:", follow_up_pattern(steps[-1]["answer"]))
            elif round_ == 1:  # the first follow-up was the question itself: its answer is the answer
                break
            else:  # the model's choice: another follow-up naming the bridge, or the final answer
                decision = await line("\n", decision_pattern(steps[-1]["answer"]))
                if FINAL.search(decision):
                    final = FINAL.split(decision, maxsplit=1)[1].strip()
                    break
                if not decision.lower().startswith("follow up:"):
                    break
                sub_question = decision.split(":", 1)[1].strip()
            if not sub_question:
                break
            found = await rag.retriever.search(sub_question, max(theta.k, 1))
            remaining = engine.max_model_len - len(ids) - 4 * LINE_TOKENS
            shown = list(found)
            while shown and len(engine.encode(format_documents(shown))) > remaining - 200:
                shown.pop()
            # A later hop's answer may not repeat the bridge it was asked about (a small model copies it).
            bridge = steps[-1]["answer"] if steps else None
            answer = await line(
                f"\n{format_documents(shown)}\nIntermediate answer:", answer_pattern(bridge, shown)
            )
            steps.append({"follow_up": sub_question, "documents": [p.title for p in shown], "answer": answer})
            last_shown = shown
            task.report({"event": "iteration", "round": round_, "follow_up": sub_question, "answer": answer})
        if final is None:
            # Read off the last hop's documents, and never an earlier hop's answer: that was a bridge.
            earlier = steps[-2]["answer"] if len(steps) >= 2 else None
            final = await line("\nSo the final answer is:", answer_pattern(earlier, last_shown))
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
        details={"documents": [title for step in steps for title in step["documents"]], "steps": steps},
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
    measured: Measurement | None = None
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
        predicted = round(model.fitted(theta), 4)
        measured = model.measurement(theta)
    result = await (drag if theta.n == 0 else iterdrag)(task, engine, budget, theta)
    result.details["allocation"] = {
        "k": theta.k,
        "demos": theta.m,
        "iterations": theta.n,
        "predicted": predicted,
        "measured": None if measured is None else measured.accuracy,
        "measured_context_tokens": None if measured is None else measured.context_tokens,
        "basis": "measured" if measured is not None else ("fitted" if model is not None else "default"),
    }
    return result

"""The remote engine against a real vLLM OpenAI server process (started once for this module)."""

import asyncio
import dataclasses
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.harness import free_port, start_vllm, stop, wait_ready
from service.runtime.budget import BudgetLimits, BudgetTracker
from service.runtime.cost import Hardware
from service.runtime.engine import SamplingSpec, StreamState, StructuredOutput, generate
from service.runtime.engine_remote import RemoteEngine
from service.runtime.model_files import ensure_default_model
from service.runtime.settings import Settings
from strategies import deepconf
from strategies.base import Task
from tests.conftest import greedy_word, start_service
from verifiers.answers import AnswerSpec

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    model_dir = str(ensure_default_model(Settings().model_cache_dir))
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    process = start_vllm(port, Path(model_dir), "smol", log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, "/health", log_path=log)
        yield url, model_dir
    finally:
        stop(process)


def remote(url: str, model_dir: str) -> RemoteEngine:
    return RemoteEngine(Settings(engine="remote", engine_url=url), model_dir)


def server_running(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("vllm:num_requests_running"):
            return float(line.split()[-1])
    raise AssertionError("vllm:num_requests_running missing")


def test_generate_counts_tokens_and_cache_hits(vllm_server: tuple[str, str]) -> None:
    url, model_dir = vllm_server

    async def scenario() -> None:
        engine = remote(url, model_dir)
        try:
            prompt = engine.render_chat([{"role": "user", "content": "Tell me about the sea. " * 20}])
            first = await generate(engine, prompt, SamplingSpec(n=3, max_tokens=12, seed=3))
            assert len(first.samples) == 3 and all(0 < s.tokens <= 12 for s in first.samples)
            assert first.prompt_tokens == len(engine.encode(prompt))
            again = await generate(engine, engine.encode(prompt), SamplingSpec(n=1, max_tokens=4, logprobs=2))
            assert again.cached_prompt_tokens >= 32
            logprobs = again.samples[0].logprobs
            assert logprobs and len(logprobs[0].top) >= 1
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_cancelling_aborts_the_server_request(vllm_server: tuple[str, str]) -> None:
    url, model_dir = vllm_server

    async def scenario() -> None:
        engine = remote(url, model_dir)
        try:
            spec = SamplingSpec(n=4, max_tokens=1500, temperature=1.0)
            prompt = engine.render_chat([{"role": "user", "content": "Write a long story."}])

            async def consume() -> None:
                async for _ in engine.stream(prompt, spec, StreamState()):
                    pass

            task = asyncio.create_task(consume())
            await asyncio.sleep(1.5)
            assert server_running(url) > 0
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(50):
                if server_running(url) == 0:
                    break
                await asyncio.sleep(0.2)
            assert server_running(url) == 0
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_a_stop_rule_closes_the_stream_and_the_server_aborts(vllm_server: tuple[str, str]) -> None:
    """What deepconf's online mode relies on: a sample its caller stops is aborted on the server at once."""
    url, model_dir = vllm_server

    async def scenario() -> None:
        engine = remote(url, model_dir)
        try:
            spec = SamplingSpec(n=1, max_tokens=1500, temperature=1.0, logprobs=5)
            prompt = engine.render_chat([{"role": "user", "content": "Write a long story."}])
            started = time.monotonic()
            generation = await generate(engine, prompt, spec, stop=lambda sample: sample.tokens >= 12)
            sample = generation.samples[0]
            assert sample.finish_reason == "stopped" and 12 <= sample.tokens < 40
            assert sample.logprobs and len(sample.logprobs) == sample.tokens
            assert all(len(entry.top) >= 5 for entry in sample.logprobs)
            for _ in range(25):
                if server_running(url) == 0:
                    break
                await asyncio.sleep(0.2)
            assert server_running(url) == 0
            assert time.monotonic() - started < 20  # 1500 tokens would take far longer
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_the_remote_engine_reports_the_servers_load(vllm_server: tuple[str, str]) -> None:
    """auto's load reading on a remote engine: vLLM's gauges from the server's /metrics."""
    url, model_dir = vllm_server

    async def scenario() -> None:
        engine = remote(url, model_dir)
        try:
            idle = await engine.load()
            assert idle.running == 0 and idle.waiting == 0 and "1 server" in idle.source
            spec = SamplingSpec(n=4, max_tokens=1500, temperature=1.0)
            prompt = engine.render_chat([{"role": "user", "content": "Write a long story."}])

            async def consume() -> None:
                async for _ in engine.stream(prompt, spec, StreamState()):
                    pass

            task = asyncio.create_task(consume())
            busy = idle
            for _ in range(50):
                await asyncio.sleep(0.2)
                busy = await engine.load()
                if busy.running + busy.waiting >= 4:
                    break
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert busy.running + busy.waiting >= 4  # each of the n samples is a sequence
            assert 0.0 < busy.kv_cache_usage <= 1.0
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_deepconf_online_on_the_remote_engine(vllm_server: tuple[str, str]) -> None:
    """deepconf's online mode on the remote engine: traces stopped mid-way, all their tokens charged."""
    url, model_dir = vllm_server

    async def scenario() -> None:
        engine = remote(url, model_dir)
        try:
            question = (
                "A shop sells 14 boxes of 6 pens and 9 single pens. How many pens is that? "
                "Give the final answer as a number after 'The answer is'."
            )
            task = Task(
                prompt=engine.render_chat([{"role": "user", "content": question}]),
                question=question,
                params={"n": 8, "warmup": 4, "keep_percent": 10, "window": 8, "consensus": 1.0},
                sampling=SamplingSpec(max_tokens=96, seed=7),
                answer=AnswerSpec("number"),
                settings=Settings(),
            )
            budget = BudgetTracker(BudgetLimits(tokens=900), engine.shape, Hardware("test", 1e15, 1e12))
            result = await deepconf.run(task, engine, None, budget)
            details = result.details
            assert details["traces_stopped"] >= 1 and budget.spend.engine_requests_stopped >= 1
            assert budget.spend.completion_tokens == details["trace_tokens"] <= 900
            assert all(t["tokens"] < 96 for t in details["traces"] if t["finish_reason"] == "stopped")
            for _ in range(25):
                if server_running(url) == 0:
                    break
                await asyncio.sleep(0.2)
            assert server_running(url) == 0
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_service_runs_on_the_remote_engine(vllm_server: tuple[str, str], tmp_path: Path) -> None:
    url, model_dir = vllm_server
    service, process = start_service(
        tmp_path, "--engine", "remote", "--engine-url", url, "--model", model_dir
    )
    try:
        body = {
            "prompt": "What is 2 + 3?",
            "strategy": "best_of_n",
            "params": {"n": 4},
            "sampling": {"max_tokens": 16},
        }
        result = httpx.post(f"{service}/v1/solve", json=body, timeout=120).json()
        assert len(result.get("params", {})) and result["usage"]["completion_tokens"] > 0
        assert result["usage"]["engine_requests"] == 1
    finally:
        stop(process)


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(
    vllm_server: tuple[str, str], tmp_path: Path
) -> None:
    url, model_dir = vllm_server
    service, process = start_service(
        tmp_path, "--engine", "remote", "--engine-url", url, "--model", model_dir
    )
    body = {"prompt": "Count slowly from one to fifty.", "strategy": "none", "sampling": {"max_tokens": 200}}
    result: dict[str, int] = {}

    def in_flight() -> None:
        result["status"] = httpx.post(f"{service}/v1/solve", json=body, timeout=120).status_code

    worker = threading.Thread(target=in_flight)
    worker.start()
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{service}/healthz", timeout=5)
    worker.join(timeout=120)
    assert result.get("status") == 200
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained


PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_vllm_sampling_parameters_reach_the_server(vllm_server: tuple[str, str]) -> None:
    """Issue 11: each extra sampling parameter and structured outputs change what the vLLM server generates."""
    import json

    import jsonschema

    url, model_dir = vllm_server

    async def scenario() -> None:
        engine = remote(url, model_dir)
        try:
            sums = engine.render_chat(
                [{"role": "user", "content": "What is 2 + 3? Answer with just the number."}]
            )
            greedy = SamplingSpec(temperature=0.0, max_tokens=40)
            baseline = (await generate(engine, sums, greedy)).samples[0]
            assert baseline.tokens < 12 and baseline.finish_reason == "stop"
            longer = await generate(engine, sums, dataclasses.replace(greedy, min_tokens=12))
            assert longer.samples[0].tokens >= 12
            forced = await generate(engine, sums, dataclasses.replace(greedy, max_tokens=24, ignore_eos=True))
            assert forced.samples[0].tokens == 24 and forced.samples[0].finish_reason == "length"
            banana = engine.encode(" banana")[0]
            biased = await generate(engine, sums, dataclasses.replace(greedy, logit_bias=((banana, 100.0),)))
            assert (
                biased.samples[0].text != baseline.text
                and engine.decode([banana]).strip() in biased.samples[0].text
            )
            stopped = await generate(
                engine, sums, dataclasses.replace(greedy, stop_token_ids=(baseline.token_ids[0],))
            )
            assert stopped.samples[0].tokens <= 1
            capital = engine.render_chat([{"role": "user", "content": "What is the capital of France?"}])
            answer = await generate(engine, capital, dataclasses.replace(greedy, max_tokens=16))
            word = greedy_word(answer.samples[0].text)
            banned = await generate(
                engine, capital, dataclasses.replace(greedy, max_tokens=16, bad_words=(word, f" {word}"))
            )
            assert word not in banned.samples[0].text
            person = engine.render_chat([{"role": "user", "content": "Describe a person as JSON."}])
            shaped = dataclasses.replace(
                greedy, max_tokens=60, structured=StructuredOutput(json=json.dumps(PERSON_SCHEMA))
            )
            jsonschema.validate(
                json.loads((await generate(engine, person, shaped)).samples[0].text), PERSON_SCHEMA
            )
            choice = dataclasses.replace(
                greedy, max_tokens=8, structured=StructuredOutput(choice=("Lyon", "Nice"))
            )
            assert (await generate(engine, capital, choice)).samples[0].text in {"Lyon", "Nice"}
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_dead_engine_is_a_503_not_a_hang_then_an_exit(vllm_server: tuple[str, str], tmp_path: Path) -> None:
    """Runs last in this module: it stops the module's vLLM server."""
    url, model_dir = vllm_server
    service, process = start_service(
        tmp_path, "--engine", "remote", "--engine-url", url, "--model", model_dir
    )
    try:
        port = int(url.rsplit(":", 1)[1])
        subprocess.run(["pkill", "-f", f"api_server.*--port {port}"], check=False)
        killed = time.monotonic()
        time.sleep(1.0)
        assert httpx.get(f"{service}/readyz", timeout=10).status_code == 503
        response = httpx.post(f"{service}/v1/solve", json={"prompt": "hi", "strategy": "none"}, timeout=30)
        assert response.status_code == 503 and response.json()["error"]["type"] == "engine_unavailable"
        assert time.monotonic() - killed < 10
        # Dead for TTC_ENGINE_DEAD_SECONDS (5 s): /healthz fails and the process exits non-zero (restart it).
        assert process.wait(timeout=30) not in (0, None)
    finally:
        stop(process)

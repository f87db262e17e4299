"""vLLM's AsyncLLM in this process: the embedded default engine.

Prefix caching is on, with small KV blocks (32 tokens on the CPU backend), so the branches of a search and
the samples of a prompt share every whole block of their common prefix.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from service.runtime.cost import ModelShape
from service.runtime.engine import Delta, Prompt, SamplingSpec, StreamState, TokenLogprob
from service.runtime.errors import EngineUnavailable, InvalidRequest
from service.runtime.libraries import IMPORT_LOCK
from service.runtime.load import KV_USAGE, RUNNING, WAITING, EngineLoad, combine
from service.runtime.settings import CpuCores, EngineDtype, Settings

logger = logging.getLogger(__name__)


class ChatTokenizer:
    """The model's tokenizer and chat template, shared by both engines."""

    def __init__(self, model_path: str) -> None:
        with IMPORT_LOCK:  # from_pretrained imports the tokenizer's modules lazily
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.max_token_chars = max((len(token) for token in self._tokenizer.get_vocab()), default=1)

    def render_chat(
        self, messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        rendered = self._tokenizer.apply_chat_template(
            list(messages), tools=list(tools) if tools else None, tokenize=False, add_generation_prompt=True
        )
        return str(rendered)

    @property
    def hf_tokenizer(self) -> Any:
        """The Hugging Face tokenizer itself (vLLM's tool-call parsers take it)."""
        return self._tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))


def _to_logprobs(token_ids: Sequence[int], entries: Any) -> tuple[TokenLogprob, ...] | None:
    if entries is None:
        return None
    result = []
    for token_id, top in zip(token_ids, entries, strict=False):
        ranked = sorted(top.values(), key=lambda item: item.rank if item.rank is not None else 1 << 30)
        chosen = top.get(token_id)
        result.append(
            TokenLogprob(
                token=(chosen.decoded_token if chosen else "") or "",
                logprob=chosen.logprob if chosen else float("-inf"),
                top=tuple((item.decoded_token or "", item.logprob) for item in ranked),
            )
        )
    return tuple(result)


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True where the CPU computes in bf16 itself (AVX512-BF16 or AMX); elsewhere torch emulates it."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return True  # not Linux: leave the choice to vLLM
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu_binding(cores: CpuCores, allowed: Iterable[int]) -> dict[str, str]:
    """vLLM's CPU thread binding for `cores`: every allowed core (none reserved), or nothing (vLLM's own
    default: all but one)."""
    if cores != "all":
        return {}
    return {
        "VLLM_CPU_OMP_THREADS_BIND": ",".join(str(core) for core in sorted(allowed)),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }


def engine_dtype(requested: EngineDtype, on_cpu: bool, native_bf16: bool) -> EngineDtype:
    """vLLM's dtype for `requested`: auto stays vLLM's choice except on a CPU that would emulate bf16."""
    if requested == "auto" and on_cpu and not native_bf16:
        return "float32"
    return requested


class InProcessEngine(ChatTokenizer):
    """AsyncLLM (vLLM v1) running in this process; its engine core is a child process."""

    def __init__(self, settings: Settings, model_path: str) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.kv_cache_gib))
        if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            for name, value in cpu_binding(settings.cpu_cores, os.sched_getaffinity(0)).items():
                os.environ[name] = value
        with IMPORT_LOCK:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.platforms import current_platform
            from vllm.v1.engine.async_llm import AsyncLLM

        super().__init__(model_path)
        self.model_name = settings.served_model_name or Path(model_path).name
        self.max_model_len = settings.max_model_len
        self.shape = ModelShape.from_model_dir(Path(model_path))
        # vLLM's CPU worker crashes ("CPU Generator does not use offset") when a seeded request's prefill is
        # split across steps, which chunked prefill does under load; one seeded request then kills the engine.
        # Whole-prompt prefill avoids it (max_model_len tokens per step is small on this backend).
        on_cpu = current_platform.is_cpu()
        args = AsyncEngineArgs(
            model=model_path,
            dtype=engine_dtype(settings.dtype, on_cpu, cpu_has_native_bf16()),
            enable_chunked_prefill=not on_cpu,
            max_num_batched_tokens=max(settings.max_model_len, 2048) if on_cpu else None,
            served_model_name=self.model_name,
            enable_prefix_caching=True,
            block_size=settings.kv_block_size,
            max_model_len=settings.max_model_len,
            enforce_eager=on_cpu,  # CUDA graphs stay on with a GPU; the CPU build skips compilation
            gpu_memory_utilization=settings.gpu_memory_utilization,
            tensor_parallel_size=settings.tensor_parallel_size,
            max_num_seqs=settings.max_num_seqs,
            disable_log_stats=False,
        )
        self._llm = AsyncLLM.from_engine_args(args)
        self._ids = itertools.count()

    async def stream(self, prompt: Prompt, spec: SamplingSpec, state: StreamState) -> AsyncIterator[Delta]:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
        from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

        token_ids = prompt if isinstance(prompt, list) else self.encode(prompt)
        try:
            params = SamplingParams(
                n=spec.n,
                temperature=spec.temperature,
                top_p=spec.top_p,
                max_tokens=spec.max_tokens,
                stop=list(spec.stop) or None,
                seed=spec.seed,
                logprobs=spec.logprobs,
                include_stop_str_in_output=spec.include_stop_str_in_output,
                output_kind=RequestOutputKind.DELTA,
                logit_bias=dict(spec.logit_bias) or None,
                structured_outputs=(
                    StructuredOutputsParams(**spec.structured.as_dict()) if spec.structured else None
                ),
                **spec.engine_extras(),
            )
        except (ValueError, VLLMClientError) as exc:  # vLLM's own checks of the parameters
            raise InvalidRequest(f"The engine refused the sampling parameters: {exc}") from exc
        (engine_input,) = await self._llm.renderer.render_cmpl_async(
            [TokensPrompt(prompt_token_ids=token_ids)]
        )
        state.prompt_tokens = len(token_ids)
        request_id = f"ttc-{next(self._ids)}"
        try:
            # aclosing: a consumer that stops reading aborts the request in the engine right away
            outputs = self._llm.generate(engine_input, params, request_id=request_id)
            async with contextlib.aclosing(outputs):
                async for output in outputs:
                    state.cached_prompt_tokens = output.num_cached_tokens or 0
                    for completion in output.outputs:
                        if not completion.token_ids and completion.finish_reason is None:
                            continue
                        yield Delta(
                            index=completion.index,
                            text=completion.text,
                            token_ids=tuple(completion.token_ids),
                            finish_reason=completion.finish_reason,
                            logprobs=_to_logprobs(completion.token_ids, completion.logprobs),
                        )
        except (VLLMClientError, ValueError) as exc:  # e.g. a token id out of range, a bad grammar
            raise InvalidRequest(f"The engine refused the request: {exc}") from exc
        except (EngineDeadError, EngineGenerateError) as exc:
            raise EngineUnavailable(f"The engine failed: {exc!r}") from exc

    def running_requests(self) -> int:
        return int(self._llm.get_num_unfinished_requests())

    async def load(self) -> EngineLoad:
        """Sequences: vLLM's own count of unfinished requests (each sample of an n > 1 call is one), which is
        exact at any moment; the split into running and waiting and the KV-cache use come from vLLM's stat
        logger gauges (this process's default Prometheus registry), which it sets at its logging steps and so
        may lag."""
        from prometheus_client import REGISTRY

        wanted = {RUNNING, WAITING, KV_USAGE}
        values: dict[str, list[float]] = {}
        for family in REGISTRY.collect():
            if family.name in wanted:
                values[family.name] = [sample.value for sample in family.samples]
        gauges = combine([values], "")
        sequences = self.running_requests()
        waiting = min(gauges.waiting, sequences)
        return EngineLoad(sequences - waiting, waiting, gauges.kv_cache_usage, "vLLM (in-process)")

    async def check_health(self) -> None:
        await self._llm.check_health()

    async def close(self) -> None:
        self._llm.shutdown()

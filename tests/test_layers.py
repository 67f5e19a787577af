"""Imports run one way through the layers of src/tunelab (docs/design.md, "Layers").

Every `import tunelab...` / `from tunelab... import` in src/tunelab is read with `ast`, including the
ones inside functions. Each file belongs to a layer (its top-level package, or the module itself for
top-level modules); a file may import its own layer or a layer listed before it in LAYERS, never one
after it. No cycle is allowed between files either, even inside one layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tunelab"

# lowest first: each layer may import only itself and the layers above it in this list
LAYERS = [
    "errors", "config",
    "runtime", "models", "data", "quant", "ops", "losses", "adapters", "methods", "runs", "memory", "doctor",
    "infer", "eval", "train", "synth", "rag", "export", "serve",
    "cli", "api",
]


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str:
    """tunelab.train.engine -> train; tunelab.errors -> errors; tunelab (the package) and
    tunelab.__main__ -> api (the public surface sits on top of everything)."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__main__", "api"):
        return "api"
    return parts[1]


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    if node.level == 0:
        return node.module
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported tunelab module, line) for every tunelab import in `path`. `from pkg import name`
    counts as an import of pkg.name when that is a module of ours, else of pkg."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    me, is_pkg = module_name(path), path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "tunelab"]
        elif isinstance(node, ast.ImportFrom):
            mod = resolve(me, is_pkg, node)
            if not mod or mod.split(".")[0] != "tunelab":
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append((sub if sub in MODULES else mod, node.lineno))
    return out


FILES = sorted(SRC.rglob("*.py"))
MODULES = {module_name(p) for p in FILES}


def _graph() -> dict[str, list[tuple[str, int]]]:
    return {module_name(p): [(m, ln) for m, ln in imports_of(p) if m != module_name(p)] for p in FILES}


def test_every_layer_is_declared():
    unknown = sorted({layer_of(m) for m in MODULES} - set(LAYERS))
    assert not unknown, f"packages not in LAYERS (add them to the order and to docs/design.md): {unknown}"


def test_no_import_against_the_layer_order():
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    for path in FILES:
        me = module_name(path)
        for mod, line in imports_of(path):
            if rank[layer_of(mod)] > rank[layer_of(me)]:
                bad.append(f"{path.relative_to(SRC.parent.parent)}:{line}: {layer_of(me)} imports "
                           f"{mod} ({layer_of(mod)} is a later layer)")
    assert not bad, "\n".join(dict.fromkeys(bad))


def test_no_cycle_between_files():
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for dep, _ in graph.get(m, []):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_cycle_between_packages():
    rank = {name: i for i, name in enumerate(LAYERS)}
    edges = {(layer_of(a), layer_of(b)) for a, deps in _graph().items() for b, _ in deps
             if layer_of(a) != layer_of(b)}
    assert all(rank[a] > rank[b] for a, b in edges), sorted(e for e in edges if rank[e[0]] < rank[e[1]])


def test_the_checker_sees_function_local_and_relative_imports(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from tunelab.train import engine\n    import tunelab.cli.main\n", encoding="utf-8")
    tree_imports = []
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            tree_imports.append(node.lineno)
    assert tree_imports == [2, 3]
    node = ast.parse("from ..train import engine").body[0]
    assert resolve("tunelab.eval.report", False, node) == "tunelab.train"
    assert layer_of("tunelab.train.engine") == "train" and layer_of("tunelab") == "api"


def test_no_file_over_400_lines():
    """Files are read in one sitting (docs/design.md); split one that grows past 400 lines."""
    long = {str(p.relative_to(SRC)): n for p in FILES if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, long

"""The layering rules, checked over the source with `ast`: imports flow one way.

`runtimes/` and `quantization/` are the lower layers: they get paths and settings as arguments
and never import `appliance`. Nothing may import in a circle, at any level: not two modules,
and not two packages (a module of `appliance.api` importing `appliance.router` while one of
`appliance.router` imports `appliance.api` is a cycle too, even if no two modules close it).
Every import counts, including function-local and `TYPE_CHECKING` ones: each is a dependency
a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("appliance", "runtimes", "quantization")
LOWER_LAYERS = ("runtimes", "quantization")
MAX_MODULE_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    mods = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    assert len(mods) > 100, "the source tree was not found"
    return mods


def _imported(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """Fully qualified names this module imports (`from x import y` yields x.y: y may be a module)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import sub` depends on pkg.sub (resolved back to pkg when sub is a name
            # defined in pkg/__init__.py), not on the package's __init__ as well.
            out.update(f"{module}.{a.name}" if module else a.name for a in node.names)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (the deepest existing module each name names)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        deps = {resolve(n) for n in _imported(tree, name, path.name == "__init__.py")}
        graph[name] = {d for d in deps if d and d != name}
    return graph


def _ancestor(module: str, depth: int) -> str:
    return ".".join(module.split(".")[:depth])


def _collapse(graph: dict[str, set[str]], depth: int) -> dict[str, set[str]]:
    """The graph between packages at `depth` (modules above that depth stay themselves)."""
    out: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        a = _ancestor(mod, depth)
        out.setdefault(a, set()).update(b for b in (_ancestor(d, depth) for d in deps) if b != a)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_lower_layers_never_import_appliance() -> None:
    upward = {
        mod: sorted(d for d in deps if d.split(".")[0] == "appliance")
        for mod, deps in import_graph().items()
        if mod.split(".")[0] in LOWER_LAYERS
    }
    assert {m: d for m, d in upward.items() if d} == {}


def test_no_import_cycles_between_modules_or_packages() -> None:
    graph = import_graph()
    depth = max(len(m.split(".")) for m in graph)
    found = {d: cycles(_collapse(graph, d)) for d in range(1, depth + 1)}
    assert {d: c for d, c in found.items() if c} == {}


def test_the_checker_sees_cycles() -> None:
    """The check above would fail on a cycle: a direct one, and one only visible between packages."""
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    graph = {"p.api.x": {"p.router.y"}, "p.router.z": {"p.api.w"}, "p.api.w": set(), "p.router.y": set()}
    assert cycles(graph) == []
    assert cycles(_collapse(graph, 2)) == [["p.api", "p.router"]]
    tree = ast.parse("from . import sibling\nfrom ..up import thing\nimport p.q\n")
    assert _imported(tree, "p.pkg.mod", False) >= {"p.pkg.sibling", "p.up.thing", "p.q"}


def test_no_product_module_is_over_the_size_limit() -> None:
    sizes = {name: len(p.read_text(encoding="utf-8").splitlines()) for name, p in _modules().items()}
    assert {n: s for n, s in sizes.items() if s > MAX_MODULE_LINES} == {}

"""Does bench_lib's import graph only look down? Run by CI before the tests (and by tests/test_layers.py).

    python scripts/check_imports.py            # exit 0: no cycle, and the rules below hold; 1: each problem listed
    python scripts/check_imports.py --graph    # also print every module's bench_lib imports

Every `import` and `from ... import` statement in every `bench_lib/**/*.py` counts, wherever it is: at the top,
inside a function, under `if TYPE_CHECKING:`. Relative imports are resolved; `from a.b import c` is an edge to the
module `a.b.c` when that is a module, else to `a.b`; `import a.b.c` is an edge to the deepest of `a.b.c`, `a.b`
that is a module of bench_lib. Importing a module of a subpackage also runs the subpackage's `__init__`, so it
counts as an edge to that too. Loading a module named by a registry's `"module:object"` string
(`importlib.import_module`) is not a statement: that is how registries stay lazy and plug-ins load.

The rules:
- no cycle;
- `bench_lib/config.py` imports no bench_lib module (the leaf every layer may use);
- no module imports the package `bench_lib` itself (its `__init__` is the public API, the top layer);
- no module outside `bench_lib.demo` imports it (the tiny models' builders: bench_lib.models names them by
  string, so a run of real models never imports them).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "bench_lib"
LEAVES = ("bench_lib.config",)
APART = ("bench_lib.demo",)  # imported by no module outside it


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package's name -> its __init__.py)."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _deepest(dotted: str, modules: dict[str, Path]) -> str | None:
    parts = dotted.split(".")
    while parts:
        name = ".".join(parts)
        if name in modules:
            return name
        parts.pop()
    return None


def imports_of(name: str, modules: dict[str, Path]) -> dict[str, list[int]]:
    """The bench_lib modules `name` imports -> the line numbers of the statements."""
    tree = ast.parse(modules[name].read_text(encoding="utf-8"), filename=str(modules[name]))
    here = name if _is_package(name, modules) else name.rpartition(".")[0]  # what `.` means in this file
    out: dict[str, list[int]] = {}

    def add(target: str | None, line: int) -> None:
        if target is None or target == name:
            return
        out.setdefault(target, []).append(line)
        # importing a.b.c runs a.b's __init__ first (the package's own __init__ is the public API: see `rules`)
        parts = target.split(".")
        for depth in range(2, len(parts)):
            parent = ".".join(parts[:depth])
            if parent != name and parent in modules and not name.startswith(parent + "."):
                out.setdefault(parent, []).append(line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(_deepest(alias.name, modules), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here.split(".")
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base != PACKAGE and not base.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in modules else _deepest(base, modules), node.lineno)
    return out


def graph(root: Path = ROOT) -> dict[str, dict[str, list[int]]]:
    modules = module_names(root)
    return {name: imports_of(name, modules) for name in modules}


def cycles(edges: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted, and one cycle path
    through each."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(components)


def _path_in(component: list[str], edges: dict[str, dict[str, list[int]]]) -> list[str]:
    """One cycle through the component's first module (breadth first: a shortest one)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def problems(root: Path = ROOT) -> list[str]:
    edges = graph(root)
    modules = module_names(root)
    out = []
    for component in cycles(edges):
        path = _path_in(component, edges)
        steps = " -> ".join(f"{a} (line {edges[a][b][0]})" for a, b in zip(path, path[1:])) + f" -> {path[-1]}"
        out.append(f"cycle of {len(component)} modules: {', '.join(component)}\n    e.g. {steps}")
    for leaf in LEAVES:
        for target, lines in sorted(edges.get(leaf, {}).items()):
            out.append(f"{modules[leaf].relative_to(root)} must import no {PACKAGE} module; it imports {target} "
                       f"(line {lines[0]})")
    for apart in APART:
        for name, targets in sorted(edges.items()):
            if name == apart or name.startswith(apart + "."):
                continue
            for target in sorted(t for t in targets if t == apart or t.startswith(apart + ".")):
                out.append(f"{modules[name].relative_to(root)} imports {target} (line {targets[target][0]}): "
                           f"nothing outside {apart} may")
    for name, targets in sorted(edges.items()):
        if PACKAGE in targets and name != PACKAGE:
            out.append(f"{modules[name].relative_to(root)} imports the package {PACKAGE} itself (line "
                       f"{targets[PACKAGE][0]}): import the module that defines the name")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", action="store_true", help="print every module's bench_lib imports")
    args = parser.parse_args(argv)
    edges = graph()
    if args.graph:
        for name, targets in sorted(edges.items()):
            print(f"{name}: {', '.join(sorted(targets)) or '-'}")
    found = problems()
    for problem in found:
        print(problem)
    if found:
        return 1
    print(f"{len(edges)} modules, {sum(len(t) for t in edges.values())} imports between them: no cycle; "
          f"{', '.join(LEAVES)} imports no {PACKAGE} module; nothing imports the package {PACKAGE}; nothing "
          f"outside {', '.join(APART)} imports it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

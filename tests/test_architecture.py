"""The shape of ncm_core: subpackages in layers whose imports only go down, and no import cycles.

The graph is built from the source (ast), with imports inside functions counted too: a cycle
hidden by a function-level import is still a cycle. ``docs/architecture.md`` draws these layers.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ncm_core"

# Lowest first. A module may import from its own layer or from any lower one, never a higher one.
LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"_version", "errors", "progress", "outputs", "devices", "options", "batch"}),
    ("io", {"io"}),
    ("measure", {"measure"}),
    ("data", {"data"}),
    ("models", {"models"}),
    ("inference", {"inference"}),
    ("explain", {"explain"}),
    ("viz", {"viz"}),
    ("evaluation", {"evaluation"}),
    ("training", {"training"}),
    ("workflows", {"workflows"}),
    ("cli", {"cli"}),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The ncm_core modules that ``path`` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ncm_core")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("ncm_core"):
                continue
            for a in node.names:  # `from ncm_core.data import synth` imports the module ncm_core.data.synth
                found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod)
    return {m for m in found if m in modules and m != name}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, (_, members) in enumerate(LAYERS):
        if top in members:
            return i
    raise AssertionError(f"{module} belongs to no declared layer: add it to LAYERS and docs/architecture.md")


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    # the root package only re-exports (lazily); it sits above every layer
    return {m: imports_of(p, modules) - {"ncm_core"} for m, p in modules.items() if m != "ncm_core"}


def test_every_module_belongs_to_a_layer():
    for m in graph():
        layer_of(m)


def test_imports_only_go_down():
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
        for m, deps in graph().items()
        for d in sorted(deps)
        if layer_of(d) > layer_of(m)
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(g.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_catch_a_cycle_and_an_upward_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("ncm_core.io.mosaic") < layer_of("ncm_core.inference.predict")


def test_no_module_over_450_lines():
    long = {m: n for m, p in all_modules().items() if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long


@pytest.mark.parametrize("module", sorted(m for m in all_modules() if not m.endswith("__main__")))
def test_every_module_imports(module):
    importlib.import_module(module)


def _n_params(fn: ast.FunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    return len([n for n in names if n not in ("self", "cls")])


def _takes_options(fn: ast.FunctionDef) -> bool:
    anns = [ast.unparse(x.annotation) for x in fn.args.args + fn.args.kwonlyargs if x.annotation is not None]
    return any("Options" in s or "Config" in s for s in anns)


def test_public_functions_take_an_options_object_beyond_12_parameters():
    wide = []
    for m, p in all_modules().items():
        for node in ast.walk(ast.parse(p.read_text())):
            if (
                isinstance(node, ast.FunctionDef)
                and not node.name.startswith("_")
                and _n_params(node) > 12
                and not _takes_options(node)
            ):
                wide.append(f"{m}.{node.name}: {_n_params(node)} parameters")
    assert not wide, "\n".join(wide)


def test_every_lazy_export_of_the_package_resolves():
    import ncm_core

    for name in ncm_core.__all__:
        assert getattr(ncm_core, name) is not None, name
    with pytest.raises(AttributeError):
        ncm_core.no_such_name  # noqa: B018

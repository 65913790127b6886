"""The layers of ARCHITECTURE.md, checked on the source: imports only point down, the three
core packages do not know each other, and no module imports itself back (no cycles).

Every import statement counts, function-local and ``TYPE_CHECKING`` ones included: an
import hidden in a function is still a dependency.  A layer is a list of module prefixes;
the most specific prefix decides.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("resume", "store", "ikeshim", "analysis")
EXCLUDED: tuple[str, ...] = ()
#: Known exceptions, each with its reason and its end.
ALLOWED_EDGES: dict[tuple[str, str], str] = {}

#: bottom to top; a module may import its own layer and the layers below it, except that
#: the members of one ``core`` group may not import another group of the same layer.
LAYERS: list[tuple[str, dict[str, tuple[str, ...]]]] = [
    (
        "domain",
        {
            "domain": (
                "resume",  # the package itself (its __init__)
                "resume.errors",
                "resume.exitcodes",
                "resume.extras",
                "resume.memo",
                "resume.credential",
                "resume.identity",
                "resume.sa",
                "store",
                "store.errors",
                "ikeshim",
                "ikeshim.errors",
            )
        },
    ),
    (
        "core",
        {
            "protocol": (
                "resume.wire",
                "resume.keyschedule",
                "resume.states",
                "resume.events",
                "resume.initiator",
                "resume.responder",
                "resume.testing",
                "resume.kem_testing",  # deterministic ML-KEM encapsulation (vectors, tests)
                "resume.demo",
                "resume.native",  # the Rust core (resume._native) behind the same API
            ),
            "store": ("store.",),
            "kernel": (
                "ikeshim.xfrm",
                "ikeshim.netlink",
                "ikeshim.algorithms",
                "ikeshim.installer",
                "ikeshim.install",
                "ikeshim.vici_map",
                "ikeshim.child_sa",
            ),
        },
    ),
    (
        "service",
        {
            "service": (
                "resume.net",
                "ikeshim.initiator",
                "ikeshim.harvest",
                "ikeshim.agent",
                "store.bootstrap",
            ),
            "analysis": ("analysis",),
        },
    ),
    (
        "cli",
        {
            "cli": (
                "resume.cli",
                "resume.commands",
                "resume.net.cli",
                "store.cli",
                "store.cache_commands",
                "ikeshim.cli",
                "analysis.cli",
            )
        },
    ),
]


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if not name.startswith(EXCLUDED):
                mods[name] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: Path) -> set[str]:
    """Project modules ``name`` imports (anywhere in the file)."""
    found: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name if is_pkg else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            if t.split(".")[0] in PACKAGES:
                r = _resolve(t)
                if r is not None and r != name and (name, r) not in ALLOWED_EDGES:
                    found.add(r)
    # ``from pkg import sub`` also names pkg; a package's own __init__ is not a dependency
    return {m for m in found if not (m in PACKAGES and any(f.startswith(m + ".") for f in found))}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _place(module: str) -> tuple[int, str]:
    """(layer index, group) by the most specific matching prefix."""
    best: tuple[int, int, str] | None = None
    for i, (_layer, groups) in enumerate(LAYERS):
        for group, prefixes in groups.items():
            for p in prefixes:
                hit = module == p or module.startswith(p if p.endswith(".") else p + ".")
                if hit and (best is None or len(p) > best[0]):
                    best = (len(p), i, group)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and ARCHITECTURE.md")
    return best[1], best[2]


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _place(module)


def test_imports_point_down_and_core_groups_are_independent() -> None:
    wrong = []
    for module, deps in sorted(GRAPH.items()):
        layer, group = _place(module)
        for dep in sorted(deps):
            dlayer, dgroup = _place(dep)
            if dlayer > layer or (dlayer == layer and dgroup != group and layer == 1):
                wrong.append(
                    f"{module} ({LAYERS[layer][0]}/{group}) -> {dep} ({LAYERS[dlayer][0]}/{dgroup})"
                )
    assert wrong == []


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH.get(m, ())):
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d]
            if d not in state and (found := visit(d)) is not None:
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state and (found := visit(m)) is not None:
            return found
    return None


def test_no_import_cycles() -> None:
    assert _cycle() is None


@pytest.mark.parametrize(
    ("edge", "why"),
    [
        (("resume.net.hooks", "ikeshim.install"), "the service installs through the shim"),
        (("ikeshim.initiator", "resume.net.client"), "the daemon-side agent uses the client"),
    ],
)
def test_the_known_cross_package_edges_exist(edge: tuple[str, str], why: str) -> None:
    """The checker sees what it must (a broken resolver would pass everything)."""
    assert edge[1] in GRAPH[edge[0]], why

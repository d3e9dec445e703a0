"""The tree tells a prompt's way: files and syntax -> config -> models -> io -> the translator -> migrate and
sweep -> the toy world -> the stages -> the app -> the commands. Every import, lazy ones inside functions
included, points down this list or stays inside its own package; no module reaches itself through others
(../shared/DESIGN.md §2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# (module prefix, layer): the longest prefix names a module's layer. Equal layers may import each other only
# inside one package (data, training and eval are stages side by side: none calls another).
LAYERS = [("bridge.files", 0), ("bridge.syntax", 0), ("bridge.web_guard", 0), ("bridge.config", 1),
          ("bridge.models", 2), ("bridge.io", 3), ("bridge.translator", 4), ("bridge", 4),
          ("bridge.io.migrate", 5), ("bridge.sweep", 5), ("toyworld", 6), ("data", 7), ("training", 7), ("eval", 7),
          ("app", 8), ("bridge.commands", 9), ("bridge.cli", 9)]


def layer(module: str) -> tuple[int, str]:
    """(layer, package) of a project module: package is the prefix that decided the layer."""
    prefix = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[prefix], prefix


def project_modules() -> dict[str, Path]:
    paths = [ROOT / "app.py"] + [p for d in ("bridge", "toyworld", "data", "training", "eval")
                                 for p in sorted((ROOT / d).rglob("*.py"))]
    out = {}
    for path in paths:
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, at module level or inside functions."""
    mods = project_modules()
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for imported in names:  # the longest prefix that is a project module: `from bridge.models import presets`
                parts = imported.split(".")
                found = next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in mods),
                             None)
                if found is not None and found != name:
                    targets.add(found)
        graph[name] = targets
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        here, package = layer(module)
        for target in targets:
            there, other = layer(target)
            if there > here or (there == here and other != package and not target.startswith(package + ".")
                                and not module.startswith(other + ".")):
                bad.append(f"{module} (layer {here}) imports {target} (layer {there})")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a circle of imports."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_points_up_a_layer():
    assert upward_imports(import_graph()) == []


def test_no_import_circles():
    """`bridge` (the package) imports the translator lazily for `bridge.Translator`; it is not a circle of
    modules importing each other, so the package's own __init__ is left out of the graph here."""
    graph = {m: {t for t in ts if t != "bridge"} for m, ts in import_graph().items() if m != "bridge"}
    assert cycles(graph) == []


def test_every_command_lives_in_bridge_commands():
    from bridge.cli import COMMANDS

    assert {module for module, *_ in COMMANDS.values()} <= {f"bridge.commands.{p.stem}"
                                                            for p in (ROOT / "bridge" / "commands").glob("*.py")}


@pytest.mark.parametrize("graph, expect", [
    ({"bridge.models.presets": {"bridge.models.loading"}, "bridge.models.loading": {"bridge.models.presets"}}, 1),
    ({"bridge.models.presets": {"bridge.models.loading"}, "bridge.models.loading": set()}, 0),
])
def test_the_circle_check_finds_a_circle(graph, expect):
    assert len(cycles(graph)) == expect


@pytest.mark.parametrize("module, target, bad", [
    ("bridge.models.render_cache", "bridge.io.images", True),    # models -> io: up
    ("bridge.translator", "bridge.io.migrate", True),
    ("bridge.sweep.run", "toyworld.world", True),                 # library -> the lab
    ("eval.run", "training.trainer", True),                       # a stage -> another stage
    ("data.gather", "bridge.commands.gather", True),              # a stage -> a command
    ("bridge.commands.sweep", "toyworld.world", False),
    ("training.trainer", "training.checkpoints", False),
    ("bridge.io.migrate", "bridge.translator", False),
])
def test_the_layer_check_tells_up_from_down(module, target, bad):
    assert bool(upward_imports({module: {target}})) is bad

"""The package's rooms import only downwards, keep private names private and load lazily."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ssc_jax"

# Lowest first: a room may import itself and the rooms before it, never one after it.
ROOMS = ("core", "solver", "similarity", "graphs", "nets", "training", "pipeline")
RANK = {room: i for i, room in enumerate(ROOMS)}
# The pipeline's own floors, lowest first: output folders, locks and the graph cache; the
# computations, which return typed results; the report drawn from them; writing an
# analysis out (the Python API's ``out=``); the command line.
FLOORS = ("store", "analysis", "report", "publish", "cli")
FLOOR_RANK = {floor: i for i, floor in enumerate(FLOORS)}
MOST_MODULES_A_ROOM = 14


def imported_modules(source: str, module: str) -> list[tuple[str, list[str]]]:
    """(module, names) for every ``import`` and ``from ... import`` anywhere in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            found.append((base, [alias.name for alias in node.names]))
    return found


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "ssc_jax" and parts[1] in RANK else None


def floor_of(module: str) -> str | None:
    parts = module.split(".")
    inside = len(parts) > 2 and parts[:2] == ["ssc_jax", "pipeline"]
    return parts[2] if inside and parts[2] in FLOOR_RANK else None


def violations(source: str, module: str) -> list[str]:
    """Upward imports and imports of another module's underscore names."""
    problems = []
    own = room_of(module)
    for target, names in imported_modules(source, module):
        if not target.startswith("ssc_jax"):
            continue
        targets = [target] + [f"{target}.{name}" for name in names]
        rooms = {room_of(t) for t in targets} - {None}
        if own is not None:
            problems += [
                f"{module} imports {target} (room {room!r} is above {own!r})"
                for room in rooms
                if RANK[room] > RANK[own]
            ]
        own_floor = floor_of(module)
        floors = {floor_of(t) for t in targets} - {None}
        if own_floor is not None:
            problems += [
                f"{module} imports {target} (floor {floor!r} is above {own_floor!r})"
                for floor in floors
                if FLOOR_RANK[floor] > FLOOR_RANK[own_floor]
            ]
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        private += [p for p in target.split(".") if p.startswith("_") and p != "_version"]
        if private:
            problems.append(f"{module} imports private {', '.join(private)} from {target}")
    return problems


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path.read_text()


def test_every_module_lives_in_a_room():
    loose = {path.stem for path in PACKAGE.glob("*.py")}
    assert loose == {"__init__", "__main__", "_version", "run"}
    rooms = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    assert rooms == set(ROOMS)
    pipeline = PACKAGE / "pipeline"
    assert {path.stem for path in pipeline.glob("*.py")} == {"__init__"}
    floors = {path.name for path in pipeline.iterdir() if (path / "__init__.py").exists()}
    assert floors == set(FLOORS)


def test_no_room_holds_too_many_modules():
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    sizes = {
        folder.relative_to(PACKAGE).as_posix(): sum(
            path.stem != "__init__" for path in folder.glob("*.py")
        )
        for folder in folders
    }
    assert {room: size for room, size in sizes.items() if size > MOST_MODULES_A_ROOM} == {}


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, from every import statement, those inside
    functions included; ``from package import module`` counts as importing the module."""
    graph = {}
    for module, source in sources.items():
        edges = set()
        for target, names in imported_modules(source, module):
            found = [f"{target}.{name}" for name in names if f"{target}.{name}" in sources]
            if len(found) < len(names) and target in sources:
                found.append(target)  # a name defined in the module (or package) itself
            edges |= set(found) - {module}
        graph[module] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles_not_even_inside_functions():
    assert import_cycles(import_graph(dict(modules()))) == []


def test_cycle_finder_sees_imports_inside_functions():
    sources = {
        "ssc_jax.pipeline.analysis.a": "from ssc_jax.pipeline.analysis import b\n",
        "ssc_jax.pipeline.analysis.b": "def f():\n    from ssc_jax.pipeline.analysis.c import g\n",
        "ssc_jax.pipeline.analysis.c": "from ssc_jax.pipeline.analysis.a import h\n",
        "ssc_jax.pipeline.analysis.d": "import ssc_jax.pipeline.analysis.a\n",
    }
    cycle = ["ssc_jax.pipeline.analysis." + name for name in "abc"]
    assert import_cycles(import_graph(sources)) == [cycle]


def test_rooms_import_only_downwards_and_no_private_names():
    problems = [p for name, source in modules() for p in violations(source, name)]
    assert problems == []


def test_checker_catches_upward_and_private_imports():
    source = textwrap.dedent(
        """
        from ssc_jax.pipeline import plots
        from ssc_jax.core.checks import check_finite
        def f():
            from ssc_jax.nets.capture import _plan
        from . import admm
        """
    )
    found = violations(source, "ssc_jax.solver.solve")
    assert len(found) == 3
    assert "room 'pipeline' is above 'solver'" in found[0]
    assert "room 'nets' is above 'solver'" in found[1]
    assert "private _plan" in found[2]
    upward = "from ssc_jax.pipeline.report.render import render_checkpoint\n"
    found = violations(upward, "ssc_jax.pipeline.analysis.analyze")
    assert found == [
        "ssc_jax.pipeline.analysis.analyze imports ssc_jax.pipeline.report.render "
        "(floor 'report' is above 'analysis')"
    ]


def test_the_solver_alone_is_loaded_for_ssc():
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import ssc_jax
        ssc_jax.ssc(np.random.default_rng(0).normal(size=(20, 5)))
        heavy = ("flax", "optax", "orbax", "tensorflow_datasets", "matplotlib", "sklearn")
        print(",".join(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_lazy_table_lists_exactly_each_rooms_public_names():
    import importlib

    import ssc_jax

    for room, names in ssc_jax._HOMES.items():
        assert set(names) == set(importlib.import_module(f"ssc_jax.{room}").__all__), room

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

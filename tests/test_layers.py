"""The import direction of the package (README "Architecture"): a module may import its own layer
and the layers below it, never one above, and the pure-JAX device layers import no PySCF, RDKit,
HDF5 or command-line library. Read from the source with ``ast`` (imports inside functions
included), so it fails on the commit that adds an import against the direction."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mofdft_jax"

#: Layers, bottom to top (module or subpackage names under mofdft_jax).
LAYERS = [
    {"_version", "config", "types", "units", "bundle", "atomic_io"},  # leaves (stdlib / JAX)
    {"functionals", "density"},  # device: energy terms, density basis
    {"model", "solver"},  # device: learned functional, optimisers
    {"train"},  # device: losses and the training loop
    {"molecules", "qchem", "data", "bench"},  # host: RDKit, PySCF, files, timing harness
    {"workflows"},  # application functions shared by the callers
    {"commands", "ase_calculator"},  # the CLI commands and the ASE calculator
    {"cli", "__init__"},  # the console script; the package root
]
DEVICE = {"functionals", "density", "model", "solver", "train", "bundle", "types", "units",
          "config", "_version", "atomic_io"}
HOST_LIBRARIES = {"pyscf", "gpu4pyscf", "rdkit", "h5py", "typer", "rich", "dask", "distributed",
                  "ase"}
#: Known imports against the direction, to be removed (issue 16); nothing may be added here.
KNOWN_EXCEPTIONS = {
    ("workflows", "commands"),  # workflows.landscape / visited use commands.learned_solve
    ("commands", "reproduce"),  # mofdft reproduce / verify import the reproduction suite
}


def _layer_of(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"mofdft_jax.{name} is in no layer of tests/test_layers.py: add it")


def _imports():
    """``(unit, imported top-level name or mofdft_jax unit, file, line)`` for every import."""
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        unit = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "mofdft_jax":
                    target = parts[1] if len(parts) > 1 else "__init__"
                else:
                    target = parts[0]
                yield unit, target, rel, node.lineno


def test_every_unit_has_a_layer():
    units = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    for unit in units:
        _layer_of(unit)


def test_no_import_against_the_layer_direction():
    bad = []
    for unit, target, rel, line in _imports():
        if target == "reproduce":
            if (unit, target) not in KNOWN_EXCEPTIONS:
                bad.append(f"{rel}:{line}: mofdft_jax.{unit} imports the reproduction suite")
            continue
        if not (PACKAGE / target).exists() and not (PACKAGE / f"{target}.py").exists():
            continue  # a third-party module
        if _layer_of(target) > _layer_of(unit) and (unit, target) not in KNOWN_EXCEPTIONS:
            bad.append(f"{rel}:{line}: {unit} (layer {_layer_of(unit)}) imports {target} "
                       f"(layer {_layer_of(target)})")
    assert not bad, "\n".join(bad)


def test_device_layers_import_no_host_library():
    bad = [f"{rel}:{line}: {unit} imports {target}" for unit, target, rel, line in _imports()
           if unit in DEVICE and target in HOST_LIBRARIES]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("pair", sorted(KNOWN_EXCEPTIONS))
def test_known_exceptions_still_exist(pair):
    """An exception that is gone must leave the list (so it cannot come back unnoticed)."""
    assert any((unit, target) == pair for unit, target, _, _ in _imports()), pair

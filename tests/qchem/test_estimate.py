"""Up-front memory estimates (issue 18): grid sizes against built grids, bytes against built
bundles, and the refusal of a job that cannot fit."""

import numpy as np
import pytest

from mofdft_jax.molecules import Molecule
from mofdft_jax.molecules.io import read_molecules
from mofdft_jax.qchem.basis import make_auxmol, make_mol
from mofdft_jax.qchem.estimate import (count_grid_points, estimate_grid_values_bytes,
                                       estimate_ks_memory, estimate_solve_memory, format_bytes)
from mofdft_jax.qchem.grids import build_grid_bundle, grid_bundle_nbytes, make_grids
from mofdft_jax.qchem.settings import PAPER_SETTINGS

#: Ethanol from SMILES (RDKit's seeded embedding): screened grid values at level 1.
ETHANOL = read_molecules("smiles:CCO")[0]
WATER = Molecule.from_angstrom([8, 1, 1], [[0, 0, 0.1173], [0, 0.7572, -0.4692],
                                           [0, -0.7572, -0.4692]], name="water")


def methane_box(n: int, spacing: float = 3.5) -> Molecule:
    """n³ methane molecules on a cubic lattice (Å)."""
    ch4 = np.array([[0, 0, 0], [0.629, 0.629, 0.629], [-0.629, -0.629, 0.629],
                    [-0.629, 0.629, -0.629], [0.629, -0.629, -0.629]])
    numbers, coords = [], []
    for i in range(n):
        for j in range(n):
            for k in range(n):
                numbers += [6, 1, 1, 1, 1]
                coords += list(ch4 + spacing * np.array([i, j, k]))
    return Molecule.from_angstrom(numbers, coords, name=f"methane-box-{n}")


@pytest.mark.parametrize("level", [0, 1, 2])
def test_grid_point_count_matches_the_built_grid(level):
    mol = make_mol(ETHANOL, "6-31G")
    built = int(np.count_nonzero(make_grids(mol, level).weights))
    assert count_grid_points(mol, level) == pytest.approx(built, rel=0.01)


@pytest.mark.parametrize("molecule,level", [(WATER, 1), (ETHANOL, 1)])
def test_grid_values_estimate_against_the_built_bundle(molecule, level):
    """Water is stored dense (exact count), ethanol screened (the estimate of the densest
    block's functions within 30 %)."""
    mol = make_mol(molecule, "6-31G(2df,p)")
    auxmol = make_auxmol(mol)
    grid = build_grid_bundle(mol, auxmol, level)
    _, estimate = estimate_grid_values_bytes(mol, auxmol, level)
    assert estimate == pytest.approx(grid_bundle_nbytes(grid), rel=0.3 if molecule is ETHANOL
                                     else 0.02)


def test_solve_estimate_counts_the_coulomb_matrix_exactly():
    mol = make_mol(WATER, "6-31G")
    auxmol = make_auxmol(mol)
    naux = auxmol.nao_nr()
    est = estimate_solve_memory(mol, auxmol, grid_level=None, with_overlap=False,
                                with_forces=False, name="water", extra={"trajectory": 10.0})
    assert est.parts["Coulomb matrix"] == 2 * naux * naux * 8
    assert est.parts["trajectory"] == 10.0 and "grid basis values" not in est.parts
    assert est.total_bytes == pytest.approx(sum(est.parts.values()))
    assert est.describe().startswith("water: mofdft solve needs ~")
    assert format_bytes(3 * 2**40) == "3 TiB" and format_bytes(2**20) == "1 MiB"


def test_a_large_box_is_far_beyond_a_workstation():
    """729 methane molecules (3,645 atoms): the KS matrices recorded per step alone are
    > 1 TiB; the estimate takes seconds."""
    import time

    box = methane_box(9)  # 729 molecules, 3,645 atoms
    t0 = time.perf_counter()
    mol = make_mol(box, "6-31G(2df,p)")
    est = estimate_ks_memory(mol, PAPER_SETTINGS, name=box.name)
    assert est.total_bytes > 2**40
    assert est.parts["recorded SCF matrices"] == 3 * 52 * mol.nao_nr() ** 2 * 8
    assert time.perf_counter() - t0 < 60

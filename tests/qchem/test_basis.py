"""Even-tempered density basis (spec §1.4): the same shells for an element in every molecule."""

import numpy as np
import pytest

from mofdft_jax.molecules import Molecule
from mofdft_jax.qchem.basis import (ETB_FUNCTION_COUNTS, aux_function_atoms, aux_function_l,
                                    make_auxbasis, make_auxmol, make_mol)

#: Spec Table S2: shells per element of the β = 2.5 ETB of 6-31G(2df,p).
SHELLS = {"H": "6s3p1d", "C": "11s8p7d3f2g", "N": "11s8p7d4f2g", "O": "11s8p7d4f2g",
          "F": "11s8p7d4f2g"}


def shell_string(shells):
    counts = {}
    for l, *_ in shells:
        counts[l] = counts.get(l, 0) + 1
    return "".join(f"{counts[l]}{'spdfgh'[l]}" for l in sorted(counts))


@pytest.mark.parametrize("symbol", ["H", "C", "N", "O", "F"])
def test_etb_shells_and_counts_per_element(symbol):
    basis = make_auxbasis()
    assert shell_string(basis[symbol]) == SHELLS[symbol]
    z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}[symbol]
    nfunc = sum(2 * l + 1 for l, *_ in basis[symbol])
    assert nfunc == ETB_FUNCTION_COUNTS[z]


def test_element_gets_the_same_functions_in_any_molecule():
    """HF (two atoms) and ethanol: counts per atom follow the per-element table."""
    ethanol = Molecule.from_angstrom(
        [6, 6, 8, 1, 1, 1, 1, 1, 1],
        [[-1.2, 0.1, 0], [0.2, -0.4, 0], [1.1, 0.7, 0], [-1.9, -0.7, 0], [-1.4, 0.7, 0.9],
         [-1.4, 0.7, -0.9], [0.4, -1.0, 0.9], [0.4, -1.0, -0.9], [2.0, 0.3, 0]], name="ethanol")
    hf = Molecule.from_angstrom([1, 9], [[0, 0, 0], [0, 0, 0.92]], name="hf")
    for molecule in (ethanol, hf):
        auxmol = make_auxmol(make_mol(molecule, "sto-3g"))
        atoms = aux_function_atoms(auxmol)
        counts = np.bincount(atoms, minlength=molecule.natm)
        assert counts.tolist() == [ETB_FUNCTION_COUNTS[int(z)] for z in molecule.numbers]
        assert len(aux_function_l(auxmol)) == auxmol.nao_nr()
    assert make_auxmol(make_mol(ethanol)).nao_nr() == 454  # spec §1.4 example

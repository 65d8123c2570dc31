"""Shared fixtures of the energy-term tests: water, its density basis, grid and a fitted density."""

import numpy as np
import pytest
from pyscf import df, dft, gto

from mofdft_jax.qchem.basis import make_auxmol

WATER = "O 0 0 0.1173; H 0 0.7572 -0.4692; H 0 -0.7572 -0.4692"


def coulomb_fit(mol, auxmol, dm):
    """p = W̃⁻¹ (μν|P) D_μν: the Coulomb-metric fit of a density matrix (spec §1.5)."""
    j3 = df.incore.aux_e2(mol, auxmol)
    return np.linalg.solve(auxmol.intor("int2c2e"), np.einsum("ijP,ij->P", j3, dm))


@pytest.fixture(scope="session")
def water_mol():
    return gto.M(atom=WATER, basis="sto-3g", verbose=0)


@pytest.fixture(scope="session")
def water_auxmol(water_mol):
    return make_auxmol(water_mol)


@pytest.fixture(scope="session")
def water_pbe(water_mol):
    """Converged PBE/STO-3G KS calculation of water (grid level 1)."""
    mf = dft.RKS(water_mol, xc="pbe")
    mf.grids.level = 1
    mf.conv_tol = 1e-11
    mf.kernel()
    assert mf.converged
    return mf


@pytest.fixture(scope="session")
def water_coeffs(water_mol, water_auxmol, water_pbe):
    """Coulomb-fitted density coefficients of the PBE density of water."""
    return coulomb_fit(water_mol, water_auxmol, water_pbe.make_rdm1())

"""Density fitting onto the even-tempered basis (spec §1.5) on a converged ethanol density.

Measured (PBE/6-31G(2df,p), grid 1, MMFF ethanol, 454 density-basis functions): plain Coulomb fit
E_H error 0.041 mHa, wᵀp - N = -8.7e-4; stacked Coulomb+external fit E_H error 0.041 mHa,
wᵀp - N = -8.8e-4, E_ext exact to 1e-10; the (W̃ + vvᵀ) variant E_H error -0.55 mHa.
"""

import numpy as np
import pytest
import scipy.linalg
from pyscf.df import incore

from mofdft_jax.molecules import Molecule
from mofdft_jax.qchem.basis import make_auxmol
from mofdft_jax.qchem.fitting import DensityFitter, fit_density, project_density_matrices
from mofdft_jax.qchem.integrals import compute_aux_norm
from mofdft_jax.qchem.ksdft import run_ks
from mofdft_jax.qchem.settings import PAPER_SETTINGS

#: Ethanol, RDKit ETKDG + MMFF geometry (smiles CCO, seed 0), Angstrom.
ETHANOL = Molecule.from_angstrom(
    [6, 6, 8, 1, 1, 1, 1, 1, 1],
    [[0.9011, -0.075, 0.0144], [-0.5844, -0.3678, 0.0562], [-1.3058, 0.8221, 0.3398],
     [1.2367, 0.3507, 0.9658], [1.1285, 0.6626, -0.7623], [1.4724, -0.9854, -0.1868],
     [-0.8088, -1.0977, 0.8394], [-0.9322, -0.7699, -0.9002], [-1.1074, 1.4606, -0.3663]],
    name="ethanol")


@pytest.fixture(scope="module")
def ethanol():
    """Converged PBE density of ethanol in the paper's orbital basis (grid level 1 for speed)."""
    run = run_ks(ETHANOL, PAPER_SETTINGS.replace(grid_level=1))
    mol = run.mol
    auxmol = make_auxmol(mol)
    dm = run.dm
    e_hartree = run.energies["hartree"][-1]  # ½ tr(D J[D]) with exact 4-centre J
    e_ext = run.energies["external"][-1]
    w2 = auxmol.intor("int2c2e")
    return mol, auxmol, dm, e_hartree, e_ext, w2


def test_blocked_projection_equals_full_tensor(ethanol):
    mol, auxmol, dm, *_ = ethanol
    full = np.einsum("ijP,ij->P", incore.aux_e2(mol, auxmol, "int3c2e"), dm)
    blocked = project_density_matrices(np.stack([dm, 0.5 * dm]), mol, auxmol, max_memory_mb=2)
    np.testing.assert_allclose(blocked[0], full, atol=1e-10)
    np.testing.assert_allclose(blocked[1], 0.5 * full, atol=1e-10)


@pytest.mark.parametrize("kind", ["coulomb", "coulomb+ext"])
def test_fitted_density_integrates_to_n(ethanol, kind):
    mol, auxmol, dm, *_ = ethanol
    p = fit_density(dm, mol, auxmol, kind)
    assert abs(compute_aux_norm(auxmol) @ p - mol.nelectron) < 1e-3


@pytest.mark.parametrize("kind", ["coulomb", "coulomb+ext"])
def test_hartree_energy_of_fit_within_01_mha(ethanol, kind):
    mol, auxmol, dm, e_hartree, _, w2 = ethanol
    p = fit_density(dm, mol, auxmol, kind, coulomb=w2)
    error = e_hartree - 0.5 * p @ w2 @ p
    assert abs(error) < 1e-4
    if kind == "coulomb":
        # the Coulomb fit minimises the Hartree energy of the error density, so E_H(p) ≤ E_H(Γ)
        assert error > 0


def test_coulomb_fit_is_the_coulomb_metric_minimiser(ethanol, rng):
    mol, auxmol, dm, e_hartree, _, w2 = ethanol
    b = project_density_matrices(dm, mol, auxmol)
    p = fit_density(dm, mol, auxmol, "coulomb", coulomb=w2)
    np.testing.assert_allclose(w2 @ p, b, atol=1e-8 * np.abs(b).max())

    def error_energy(q):  # ½ (ρ_Γ - ρ_q | ρ_Γ - ρ_q), up to the constant E_H(Γ)
        return -b @ q + 0.5 * q @ w2 @ q

    for _ in range(3):
        assert error_energy(p + 1e-3 * rng.normal(size=p.shape)) > error_energy(p)


def test_stacked_fit_is_least_squares_and_exact_in_external_energy(ethanol):
    mol, auxmol, dm, _, e_ext, w2 = ethanol
    fitter = DensityFitter(mol, auxmol, "coulomb+ext", coulomb=w2)
    p = fitter.fit(dm)
    b = project_density_matrices(dm, mol, auxmol)
    a = np.vstack([w2, fitter.v_ext[None]])
    ref = scipy.linalg.lstsq(a, np.append(b, e_ext))[0]
    np.testing.assert_allclose(p, ref, atol=1e-6 * np.abs(p).max())
    assert fitter.v_ext @ p == pytest.approx(e_ext, abs=1e-7)
    p_c = fit_density(dm, mol, auxmol, "coulomb", coulomb=w2)
    assert abs(fitter.v_ext @ p_c - e_ext) > 1e-3  # the row matters (spec §1.5: ~0.01 Ha)


def test_metric_variant_minimises_the_written_objective(ethanol, rng):
    """(p - p_C)ᵀW̃(p - p_C) + (vᵀp - e)² is smallest at the (W̃ + vvᵀ) solution (spec §1.5)."""
    mol, auxmol, dm, _, e_ext, w2 = ethanol
    p_c = fit_density(dm, mol, auxmol, "coulomb", coulomb=w2)
    fitter = DensityFitter(mol, auxmol, "coulomb+ext-metric", coulomb=w2)
    v = fitter.v_ext

    def objective(q):
        return (q - p_c) @ w2 @ (q - p_c) + (v @ q - e_ext) ** 2

    p_m = fitter.fit(dm)
    p_s = fit_density(dm, mol, auxmol, "coulomb+ext", coulomb=w2)
    assert objective(p_m) < objective(p_s)
    assert objective(p_m) < objective(p_c)
    for _ in range(3):
        assert objective(p_m + 1e-4 * rng.normal(size=p_m.shape)) > objective(p_m)


def test_unknown_fit_kind_is_refused(ethanol):
    mol, auxmol, *_ = ethanol
    with pytest.raises(ValueError, match="unknown fit kind"):
        DensityFitter(mol, auxmol, "overlap")

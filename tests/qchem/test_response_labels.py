"""Curvature labels from the non-interacting density response (qchem.response, issue 19 item 3).

Water, PBE/6-31G, grid level 1. Checked: the first-order density matrix against central
differences of the diagonalisation of F + ε δV (1e-8), δp is the fit of that response, every
label is convex (δpᵀ ∇²T_S δp = −δuᵀ S δp > 0), and the grid terms' Hessian-vector products
(central differences of analytic gradients) against forward-over-reverse autodiff of the device
world's APBE and PBE energies.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from pyscf import lib

from mofdft_jax.functionals import apbe_energy, pbe_xc_energy
from mofdft_jax.molecules import Molecule
from mofdft_jax.qchem.basis import make_auxmol
from mofdft_jax.qchem.fitting import DensityFitter
from mofdft_jax.qchem.integrals import build_integral_bundle
from mofdft_jax.qchem.ksdft import run_ks
from mofdft_jax.qchem.labels import compute_labels
from mofdft_jax.qchem.perturbation import overlap_3c
from mofdft_jax.qchem.response import density_response
from mofdft_jax.qchem.settings import LabelSettings

WATER = Molecule.from_angstrom([8, 1, 1], [[0, 0, 0.05], [0, 0.757, 0.587], [0.1, -0.757, 0.587]],
                               name="water")
SETTINGS = LabelSettings(basis="6-31G", grid_level=1, response_directions=2)


@pytest.fixture(scope="module")
def water():
    run = run_ks(WATER, SETTINGS)
    return run, make_auxmol(run.mol), compute_labels(WATER, SETTINGS)


def occupied_density(fock, s_ao, nocc):
    _, c = scipy.linalg.eigh(fock, s_ao)
    return 2.0 * c[:, :nocc] @ c[:, :nocc].T


def test_density_response_matches_finite_differences(water):
    run, auxmol, _ = water
    mol = run.mol
    s_ao = mol.intor_symmetric("int1e_ovlp")
    nocc = mol.nelectron // 2
    du = np.random.default_rng(1).normal(size=auxmol.nao_nr())
    dv = lib.unpack_tril(du @ overlap_3c(mol, auxmol))
    for k in (2, run.n_steps):
        fock = run.fock_diag[k]
        np.testing.assert_allclose(occupied_density(fock, s_ao, nocc), run.dms[k], atol=1e-8)
        d_gamma = density_response(fock, s_ao, nocc, dv[None])[0]
        eps = 1e-5
        fd = (occupied_density(fock + eps * dv, s_ao, nocc)
              - occupied_density(fock - eps * dv, s_ao, nocc)) / (2 * eps)
        np.testing.assert_allclose(d_gamma, fd, atol=1e-8 * max(1.0, np.abs(fd).max()))
        assert np.abs(np.trace(d_gamma @ s_ao)) < 1e-10  # the electron count does not change
        # the fit is linear, so δp = F(δΓ) is the derivative of the fitted densities (a larger
        # ε: W̃'s conditioning amplifies the rounding of the fitted densities in the quotient)
        fitter = DensityFitter(mol, auxmol, SETTINGS.fit)
        dp = fitter.fit(d_gamma)
        eps = 1e-4
        dp_fd = (fitter.fit(occupied_density(fock + eps * dv, s_ao, nocc))
                 - fitter.fit(occupied_density(fock - eps * dv, s_ao, nocc))) / (2 * eps)
        np.testing.assert_allclose(dp, dp_fd, atol=2e-5 * np.abs(dp).max())
        np.testing.assert_allclose(fitter.fit(2 * d_gamma - run.dms[k]),
                                   2 * dp - fitter.fit(run.dms[k]), atol=1e-9)


def test_curvature_labels_are_convex_and_normalised(water):
    _, _, labels = water
    dp, hvp = labels.response_dp, labels.response_hvp
    assert dp.shape == (labels.n_steps, 2, labels.naux)
    np.testing.assert_allclose(np.linalg.norm(dp, axis=-1), 1.0, atol=1e-12)
    curvature = np.einsum("kmn,kmn->km", dp, hvp["ts"])
    assert np.all(curvature > 0)
    # the total energy is stiffer still (Hartree adds δpᵀ W̃ δp > 0)
    assert np.all(np.einsum("kmn,kmn->km", dp, hvp["tot"]) > curvature)


def test_grid_hessian_vector_products_match_autodiff(water):
    run, auxmol, labels = water
    bundle = build_integral_bundle(run.mol, auxmol, grid_level=SETTINGS.grid_level,
                                   grids=run.mf.grids, with_overlap=False)

    @jax.jit
    def hvps(p, v, bundle):
        def hvp(fn):
            return jax.jvp(lambda q: jax.grad(fn)(q, bundle), (p,), (v,))[1]
        return hvp(apbe_energy), hvp(pbe_xc_energy)

    for k in (0, labels.n_steps - 1):
        p, v = jnp.asarray(labels.coeffs[k]), jnp.asarray(labels.response_dp[k, 0])
        h_apbe, h_xc = (np.asarray(x) for x in hvps(p, v, bundle))
        kin = labels.response_hvp["ts"][k, 0] - labels.response_hvp["ts_res"][k, 0]
        xc = labels.response_hvp["txc"][k, 0] - labels.response_hvp["ts"][k, 0]
        np.testing.assert_allclose(kin, h_apbe, atol=1e-5 * np.abs(h_apbe).max())
        np.testing.assert_allclose(xc, h_xc, atol=1e-5 * np.abs(h_xc).max())

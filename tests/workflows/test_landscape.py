"""Landscape diagnostics (workflows.landscape): the Coulomb-metric spectrum on the constraint
plane, checked on quadratics with known answers and on the classical APBE+PBE energy of water,
whose KS density must be a stationary region without negative modes (issue 19 measured the lowest
eigenvalue +0.93 for ethanol)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mofdft_jax.molecules import Molecule
from mofdft_jax.qchem.basis import make_auxmol
from mofdft_jax.qchem.integrals import build_integral_bundle
from mofdft_jax.qchem.ksdft import run_ks
from mofdft_jax.qchem.labels import labels_from_run
from mofdft_jax.qchem.settings import LabelSettings
from mofdft_jax.solver.energy import make_energy_fn
from mofdft_jax.workflows.landscape import (coulomb_distance, coulomb_metric_spectrum,
                                            tangent_basis)


def test_tangent_basis_is_orthonormal_and_orthogonal_to_w():
    w = np.random.default_rng(0).uniform(0.1, 1.0, 12)
    z = tangent_basis(w)
    assert z.shape == (12, 11)
    np.testing.assert_allclose(z.T @ z, np.eye(11), atol=1e-12)
    np.testing.assert_allclose(w @ z, 0.0, atol=1e-12)


def test_spectrum_of_quadratics_in_the_coulomb_metric():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(10, 10))
    coulomb = a @ a.T + 10 * np.eye(10)
    w = rng.uniform(0.1, 1.0, 10)
    np.testing.assert_allclose(coulomb_metric_spectrum(2.5 * coulomb, coulomb, w), 2.5, rtol=1e-10)
    lam = coulomb_metric_spectrum(coulomb - 3.0 * np.outer(w, w), coulomb, w)
    np.testing.assert_allclose(lam, 1.0, rtol=1e-10)  # curvature along w is projected out
    # one negative direction inside the plane is found with its Rayleigh quotient
    d = tangent_basis(w)[:, 0]
    h = coulomb - 2.0 * np.outer(coulomb @ d, coulomb @ d) / (d @ coulomb @ d)
    lam = coulomb_metric_spectrum(h, coulomb, w)
    assert np.sum(lam < 0) == 1 and lam[0] == pytest.approx(-1.0, rel=1e-10)
    p, q = rng.normal(size=10), rng.normal(size=10)
    assert coulomb_distance(p, q, coulomb) == pytest.approx(np.sqrt((p - q) @ coulomb @ (p - q)))


def test_classical_apbe_energy_has_no_negative_mode_at_the_ks_density():
    water = Molecule.from_angstrom([8, 1, 1], [[0, 0, 0.05], [0, 0.757, 0.587],
                                               [0.1, -0.757, 0.587]], name="water")
    settings = LabelSettings(basis="6-31G", grid_level=1)
    run = run_ks(water, settings)
    labels = labels_from_run(run)
    auxmol = make_auxmol(run.mol)
    bundle = build_integral_bundle(run.mol, auxmol, grid_level=1, grids=run.mf.grids,
                                   with_overlap=False, with_forces=False)
    _, energy_fn = make_energy_fn("apbe", xc="pbe")
    hessian = np.asarray(jax.jit(jax.hessian(energy_fn))(jnp.asarray(labels.p_ref), bundle))
    lam = coulomb_metric_spectrum(hessian, np.asarray(bundle.coulomb), np.asarray(bundle.norm))
    assert lam.shape == (labels.naux - 1,)
    assert lam[0] > 0.1

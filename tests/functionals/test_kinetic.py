"""Classical kinetic functionals: pointwise against libxc, integrated against closed forms.

libxc (through PySCF): LDA_K_TF, GGA_K_VW, GGA_K_TFVW (= TF + 1·vW), GGA_K_APBE (id 185) — energy
density and both potentials to 1e-10 relative over ρ ∈ [1e-10, 1e4], s ∈ [1e-3, 100]. On a grid, the
TF and vW energies of one normalised Gaussian density have closed forms.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pyscf import gto
from pyscf.dft import libxc

from mofdft_jax.functionals import KINETIC_FUNCTIONALS, kinetic
from mofdft_jax.qchem.basis import make_auxmol
from mofdft_jax.qchem.grids import build_grid_bundle

RHO = np.logspace(-10, 4, 57)
REDUCED_GRADIENTS = np.array([1e-3, 1e-2, 0.1, 0.3, 1.0, 2.0, 5.0, 20.0, 100.0])


def mesh():
    rho, s = np.meshgrid(RHO, REDUCED_GRADIENTS, indexing="ij")
    rho, s = rho.ravel(), s.ravel()
    return rho, (s * 2.0 * (3.0 * np.pi**2) ** (1.0 / 3.0) * rho ** (4.0 / 3.0)) ** 2


@pytest.mark.parametrize("libxc_name, fn", [
    ("LDA_K_TF", kinetic.thomas_fermi_energy_density),
    ("GGA_K_VW", kinetic.von_weizsaecker_energy_density),
    ("GGA_K_TFVW", lambda r, s: kinetic.tf_vw_energy_density(r, s, vw_fraction=1.0)),
    ("GGA_K_APBE", kinetic.apbe_energy_density),
])
def test_kinetic_energy_density_matches_libxc(libxc_name, fn):
    """e, ∂e/∂ρ, ∂e/∂σ to 1e-10 relative (measured ≤ 6e-15). For TF+vW, ∂e/∂ρ = (5/3)c_TF ρ^{2/3}
    - σ/(8ρ²) crosses zero, so its error is measured against |∂TF/∂ρ| + |∂vW/∂ρ|."""
    rho, sigma = mesh()
    rho_in = np.vstack([rho, np.sqrt(sigma), np.zeros((2, rho.size))])
    if libxc_name.startswith("LDA"):
        rho_in = rho
    exc, vxc = libxc.eval_xc(libxc_name, rho_in, spin=0, deriv=1)[:2]
    e = np.asarray(fn(jnp.asarray(rho), jnp.asarray(sigma)))
    vrho, vsigma = jax.vmap(jax.grad(fn, argnums=(0, 1)))(jnp.asarray(rho), jnp.asarray(sigma))
    assert np.max(np.abs(e - exc * rho) / np.abs(exc * rho)) < 1e-10
    vrho_scale = np.abs(vxc[0])
    if libxc_name == "GGA_K_TFVW":
        vrho_scale = 5.0 / 3.0 * kinetic.C_TF * rho ** (2.0 / 3.0) + sigma / (8.0 * rho * rho)
    assert np.max(np.abs(np.asarray(vrho) - vxc[0]) / vrho_scale) < 1e-10
    if libxc_name.startswith("GGA"):
        assert np.max(np.abs(np.asarray(vsigma) - vxc[1]) / np.abs(vxc[1])) < 1e-10
    else:
        assert np.all(np.asarray(vsigma) == 0.0)


def test_tf_vw_mixtures_follow_the_code_naming():
    """'tf+1/9vw' = TF + vW/9 (code TFVW), 'tf+vw' = TF + vW (code TFVW1.1), spec §6.4."""
    rho, sigma = (jnp.asarray(x) for x in mesh())
    tf = kinetic.thomas_fermi_energy_density(rho)
    vw = kinetic.von_weizsaecker_energy_density(rho, sigma)
    np.testing.assert_allclose(kinetic.KINETIC_ENERGY_DENSITIES["tf+1/9vw"](rho, sigma),
                               tf + vw / 9.0, rtol=1e-14)
    np.testing.assert_allclose(kinetic.KINETIC_ENERGY_DENSITIES["tf+vw"](rho, sigma), tf + vw,
                               rtol=1e-14)


@pytest.fixture(scope="module")
def gaussian_density():
    """ρ = N (α/π)^{3/2} e^{-αr²} with N = 2 as one s function of the density basis of an O atom."""
    mol = gto.M(atom="O 0 0 0", basis="sto-3g", verbose=0)
    auxmol = make_auxmol(mol)
    shell = [b for b in range(auxmol.nbas) if auxmol.bas_angular(b) == 0][5]
    alpha = float(auxmol.bas_exp(shell)[0])
    func = auxmol.ao_loc_nr()[shell]
    omega0 = auxmol.eval_gto("GTOval_sph", np.zeros((1, 3)))[0, func]  # ω(0) = its prefactor
    n_el = 2.0
    coeffs = np.zeros(auxmol.nao_nr())
    coeffs[func] = n_el / (omega0 * (np.pi / alpha) ** 1.5)
    grid = build_grid_bundle(mol, auxmol, level=3)
    return alpha, n_el, coeffs, grid


def test_thomas_fermi_of_a_gaussian(gaussian_density):
    """T_TF = c_TF N^{5/3} (α/π)(3/5)^{3/2}; the level-3 grid reproduces it to 1e-9 relative
    (measured 1.6e-14; α = 52.7)."""
    alpha, n_el, coeffs, grid = gaussian_density
    ref = kinetic.C_TF * n_el ** (5.0 / 3.0) * (alpha / np.pi) * 0.6**1.5
    got = float(KINETIC_FUNCTIONALS["tf"](coeffs, grid))
    assert abs(got - ref) / ref < 1e-9


def test_von_weizsaecker_of_a_gaussian(gaussian_density):
    """T_vW = 3αN/4 (= the exact kinetic energy of N/2 electron pairs in one Gaussian orbital), to
    1e-9 relative on the level-3 grid (measured 5.1e-11)."""
    alpha, n_el, coeffs, grid = gaussian_density
    ref = 0.75 * alpha * n_el
    got = float(KINETIC_FUNCTIONALS["vw"](coeffs, grid))
    assert abs(got - ref) / ref < 1e-9

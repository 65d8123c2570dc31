"""build_grid_bundle: block layout, screening, and that blocked+screened integration equals dense.

Ethanol with the paper's density basis (454 functions) on a PySCF level-0 grid: the screened
bundle drops about 40 % of the functions per block and must integrate every grid term to the same
value and gradient as the dense bundle.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pyscf import gto

from mofdft_jax.functionals import (electron_count_on_grid, grid_energy_terms,
                                    integrate_energy_density, masked_energy_density)
from mofdft_jax.functionals.kinetic import MASKED_KINETIC_ENERGY_DENSITIES
from mofdft_jax.functionals.xc import MASKED_XC_ENERGY_DENSITIES
from mofdft_jax.qchem import grids as grids_mod
from mofdft_jax.qchem.basis import make_auxmol
from mofdft_jax.qchem.grids import build_grid_bundle, make_grids, order_points_in_blocks

ETHANOL = """C -0.0007 -0.5406 0.0000
C 1.2296 0.3406 0.0000
O -1.1713 0.2591 0.0000
H -0.0227 -1.1866 0.8822
H -0.0227 -1.1866 -0.8822
H 2.1419 -0.2633 0.0000
H 1.2321 0.9836 0.8844
H 1.2321 0.9836 -0.8844
H -1.9415 -0.3121 0.0000"""


@pytest.fixture(scope="module")
def ethanol():
    mol = gto.M(atom=ETHANOL, basis="sto-3g", verbose=0)
    return mol, make_auxmol(mol)


@pytest.fixture(scope="module")
def ethanol_grids(ethanol):
    mol, auxmol = ethanol
    dense = build_grid_bundle(mol, auxmol, level=0, block_size=64, dense=True)
    screened = build_grid_bundle(mol, auxmol, level=0, block_size=64, dense=False)
    return dense, screened


def atomic_gaussians_coeffs(mol, auxmol, admixture=True):
    """Coefficients of a sum of one normalised s Gaussian per atom (exponent ≈ 1, Z electrons each)
    plus small random d/f admixtures, so every grid term sees a structured molecular density."""
    rng = np.random.default_rng(7)
    coeffs = np.zeros(auxmol.nao_nr())
    loc = auxmol.ao_loc_nr()
    n_el = 0.0
    atoms_done = set()
    for b in range(auxmol.nbas):
        l, alpha = auxmol.bas_angular(b), auxmol.bas_exp(b)[0]
        if l == 0 and 0.5 < alpha < 2.0 and auxmol.bas_atom(b) not in atoms_done:
            atoms_done.add(auxmol.bas_atom(b))
            z = mol.atom_charge(auxmol.bas_atom(b))
            omega0 = auxmol.eval_gto("GTOval_sph", auxmol.atom_coord(auxmol.bas_atom(b))[None],
                                     shls_slice=(b, b + 1))[0, 0]
            coeffs[loc[b]] = z / (omega0 * (np.pi / alpha) ** 1.5)
            n_el += z
        elif admixture and l >= 2 and alpha > 0.3:
            coeffs[loc[b]:loc[b + 1]] = 0.01 * rng.standard_normal(loc[b + 1] - loc[b])
    return coeffs, n_el


def test_blocks_are_a_padded_permutation_of_the_pyscf_grid(ethanol, ethanol_grids):
    """Every PySCF point appears exactly once; padding points have zero weight and zero values."""
    mol, _ = ethanol
    pyscf_grids = make_grids(mol, level=0)
    for grid in ethanol_grids:
        w = np.asarray(grid.weights).ravel()
        real = w != 0.0
        assert real.sum() == np.count_nonzero(pyscf_grids.weights)
        np.testing.assert_allclose(w.sum(), pyscf_grids.weights.sum(), rtol=1e-13)
        got = np.asarray(grid.coords).reshape(-1, 3)[real]
        order = np.lexsort(got.T)
        ref = pyscf_grids.coords[pyscf_grids.weights != 0]
        np.testing.assert_array_equal(got[order], ref[np.lexsort(ref.T)])
        ao = np.asarray(grid.ao).transpose(0, 2, 1, 3).reshape(w.size, 4, -1)
        assert np.all(ao[~real] == 0.0)


def test_blocks_are_spatially_compact():
    """Recursive bisection: full blocks, and a block's extent is far below the cloud's extent."""
    rng = np.random.default_rng(3)
    pts = rng.standard_normal((5000, 3)) * [8.0, 3.0, 1.0]
    order = order_points_in_blocks(pts, 100)
    assert sorted(order.tolist()) == list(range(5000))
    blocks = pts[order].reshape(50, 100, 3)
    extent = (blocks.max(1) - blocks.min(1)).max(1)
    assert np.median(extent) < 0.25 * (pts.max(0) - pts.min(0)).max()


#: Every masked kinetic and XC energy density, keyed "k:NAME" / "x:NAME".
ALL_ENERGY_DENSITIES = {**{f"k:{k}": v for k, v in MASKED_KINETIC_ENERGY_DENSITIES.items()},
                        **{f"x:{k}": v for k, v in MASKED_XC_ENERGY_DENSITIES.items()}}


def all_grid_terms(p, grid):
    """``{name: E}`` of every kinetic and XC term in one pass over the grid."""
    return integrate_energy_density(
        lambda r, s: {k: f(r, s) for k, f in ALL_ENERGY_DENSITIES.items()}, p, grid)


def test_screening_drops_functions_but_not_accuracy(ethanol, ethanol_grids):
    """Screened (threshold 1e-12) vs dense: energies of all grid terms to 1e-10 relative and their
    gradients to 1e-10 of the gradient norm (measured ≤ 7e-15 and ≤ 6e-14), while the blocks keep
    on average 268 of the 454 functions (padded nsig 385)."""
    mol, auxmol = ethanol
    dense, screened = ethanol_grids
    assert dense.ao.shape[-1] == auxmol.nao_nr()
    assert screened.ao.shape[-1] < 0.9 * auxmol.nao_nr()
    p = jnp.asarray(atomic_gaussians_coeffs(mol, auxmol)[0])
    names, all_terms = ALL_ENERGY_DENSITIES, all_grid_terms
    jac = jax.jit(jax.jacrev(all_terms))
    e_dense, e_screened = all_terms(p, dense), all_terms(p, screened)
    g_dense, g_screened = jac(p, dense), jac(p, screened)
    for k in names:
        assert abs(float(e_screened[k] - e_dense[k])) <= 1e-10 * abs(float(e_dense[k])), k
        err = float(jnp.linalg.norm(g_screened[k] - g_dense[k]))
        assert err <= 1e-10 * float(jnp.linalg.norm(g_dense[k])), k


def test_grid_integrates_the_electron_count():
    """Water, screened level-3 grid: a sum of normalised atomic s Gaussians (N = 10) with d/f
    admixtures (which integrate to 0) integrates to N within the quadrature error, |ΔN| < 1e-6
    (measured 2e-8; level 2: 1.1e-6, level 1: 4.8e-5)."""
    mol = gto.M(atom="O 0 0 0.1173; H 0 0.7572 -0.4692; H 0 -0.7572 -0.4692", basis="sto-3g",
                verbose=0)
    auxmol = make_auxmol(mol)
    coeffs, n_el = atomic_gaussians_coeffs(mol, auxmol)
    assert n_el == mol.nelectron
    grid = build_grid_bundle(mol, auxmol, level=3, dense=False)
    assert abs(float(electron_count_on_grid(coeffs, grid)) - n_el) < 1e-6


def test_analytic_prescreen_bounds_the_basis_values(ethanol):
    """The shell bound used to skip evaluations is ≥ the true max |ω|, |∂ω| beyond a distance."""
    mol, auxmol = ethanol
    atom, ang, alpha, coef, offset, nfunc = grids_mod._shell_table(auxmol)
    kappa = grids_mod._angular_constants(auxmol, ang, alpha, coef)
    rng = np.random.default_rng(11)
    pts = rng.standard_normal((4000, 3)) * 4.0
    vals = np.abs(auxmol.eval_gto("GTOval_sph_deriv1", pts)).max(axis=0)  # (npts, naux)
    for b in range(auxmol.nbas):
        dist = np.linalg.norm(pts - auxmol.atom_coord(atom[b]), axis=1)
        true_max = vals[:, offset[b]:offset[b] + nfunc[b]].max(axis=1)
        bound = grids_mod._shell_bounds(dist, np.full_like(dist, ang[b], dtype=int),
                                        alpha[b], coef[b], kappa[b])
        normal = true_max > 1e-290  # denormals round arbitrarily
        assert np.all(true_max[normal] <= bound[normal] * (1 + 1e-12)), (b, ang[b], alpha[b])


def test_dense_is_chosen_automatically_for_small_molecules(ethanol, monkeypatch):
    """dense=None keeps all functions when they fit under DENSE_LIMIT_BYTES, else screens."""
    mol, auxmol = ethanol
    auto = build_grid_bundle(mol, auxmol, level=0, block_size=256)
    assert auto.ao.shape[-1] == auxmol.nao_nr()
    monkeypatch.setattr(grids_mod, "DENSE_LIMIT_BYTES", 1e6)
    small_limit = build_grid_bundle(mol, auxmol, level=0, block_size=256)
    assert small_limit.ao.shape[-1] < auxmol.nao_nr()
    p, _ = atomic_gaussians_coeffs(mol, auxmol)
    a = grid_energy_terms(p, auto, "tf", "lda")
    b = grid_energy_terms(p, small_limit, "tf", "lda")
    np.testing.assert_allclose(float(a["kinetic"]), float(b["kinetic"]), rtol=1e-10)
    np.testing.assert_allclose(float(a["xc"]), float(b["xc"]), rtol=1e-10)


def test_masking_helper_is_exported():
    fn = masked_energy_density(lambda r, s: r ** (4.0 / 3.0), uses_sigma=False)
    assert float(fn(jnp.array(-1.0), jnp.array(0.0))) == 0.0


@pytest.mark.parametrize("dense", [False, True])
def test_padding_at_build_changes_no_grid_term(ethanol, ethanol_grids, dense):
    """``block_multiple`` / ``function_multiple`` pad with zero-weight blocks and zero columns:
    every grid term and its gradient equal the unpadded bundle's (to rounding), the real blocks
    are unchanged, and padding blocks index distinct functions (no repeated scatter)."""
    mol, auxmol = ethanol
    plain = ethanol_grids[0] if dense else ethanol_grids[1]
    padded = build_grid_bundle(mol, auxmol, level=0, block_size=64, dense=dense,
                               block_multiple=7, function_multiple=48)
    nblk, nsig = plain.weights.shape[0], plain.idx.shape[1]
    assert padded.weights.shape[0] % 7 == 0 and padded.weights.shape[0] >= nblk
    assert padded.idx.shape[1] % 48 == 0 and padded.idx.shape[1] >= nsig
    np.testing.assert_array_equal(padded.weights[:nblk], plain.weights)
    np.testing.assert_array_equal(padded.ao[:nblk, :, :, :nsig], plain.ao)
    assert not padded.weights[nblk:].any() and not padded.ao[nblk:].any()
    assert not padded.ao[:, :, :, nsig:].any()
    if padded.weights.shape[0] > nblk:
        pad_idx = padded.idx[nblk:][0]
        assert len(np.unique(pad_idx)) == min(len(pad_idx), int(plain.idx.max()) + 1)
    coeffs, _ = atomic_gaussians_coeffs(mol, auxmol)
    p = jnp.asarray(coeffs)
    for grid in (plain, padded):
        grid_jax = jax.tree.map(jnp.asarray, grid)
        terms = jax.value_and_grad(
            lambda c, g: sum(grid_energy_terms(c, g, kinetic="apbe", xc="pbe").values()))
        value, grad = terms(p, grid_jax)
        if grid is plain:
            ref_value, ref_grad = value, grad
    assert float(value) == pytest.approx(float(ref_value), rel=1e-13)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(ref_grad), rtol=0,
                               atol=1e-12 * float(jnp.max(jnp.abs(ref_grad))))


def test_float32_grid_values_are_an_explicit_option(ethanol, ethanol_grids):
    """``dtype="float32"`` stores the rounded values (half the bytes) and contracts in float32:
    every grid term within 2e-7 relative of float64 (measured ≤ 7.6e-8), gradients within 1e-6 of
    the gradient norm (measured ≤ 1.5e-7: TF, APBE, LDA, PBE) or 1e-4 for the terms with von
    Weizsäcker (measured ≤ 2.5e-5); the results keep the coefficients' float64 type, other types
    are refused. (Ethanol, level 2, 6-31G(2df,p), APBE+PBE: ΔE = 3e-6 Ha of 133 Ha.)"""
    mol, auxmol = ethanol
    _, screened = ethanol_grids
    single = build_grid_bundle(mol, auxmol, level=0, block_size=64, dense=False, dtype="float32")
    assert single.ao.dtype == np.float32 and 2 * single.ao.nbytes == screened.ao.nbytes
    np.testing.assert_array_equal(single.ao, screened.ao.astype(np.float32))
    np.testing.assert_array_equal(single.idx, screened.idx)
    np.testing.assert_array_equal(single.weights, screened.weights)
    p = jnp.asarray(atomic_gaussians_coeffs(mol, auxmol)[0])
    names, all_terms = ALL_ENERGY_DENSITIES, all_grid_terms
    jac = jax.jit(jax.jacrev(all_terms))
    grids = {dt: jax.tree.map(jnp.asarray, g) for dt, g in (("f64", screened), ("f32", single))}
    e64, e32 = all_terms(p, grids["f64"]), all_terms(p, grids["f32"])
    g64, g32 = jac(p, grids["f64"]), jac(p, grids["f32"])
    worst_e = worst_g = 0.0
    for k in names:
        assert e32[k].dtype == jnp.float64 and g32[k].dtype == jnp.float64
        rel_e = abs(float(e32[k] - e64[k])) / abs(float(e64[k]))
        rel_g = float(jnp.linalg.norm(g32[k] - g64[k]) / jnp.linalg.norm(g64[k]))
        assert 0.0 < rel_e <= 2e-7, k  # > 0: the float32 path really ran
        # von Weizsäcker's |∇ρ|²/ρ amplifies the relative rounding of ρ in the low-density tail
        assert rel_g <= (1e-4 if "vw" in k else 1e-6), k
        worst_e, worst_g = max(worst_e, rel_e), max(worst_g, rel_g)
    print(f"float32 grid values: worst relative energy error {worst_e:.1e}, gradient {worst_g:.1e}")
    with pytest.raises(ValueError, match="float64 or float32"):
        build_grid_bundle(mol, auxmol, level=0, dtype="float16")


def test_grid_values_are_aliased_not_copied_on_the_cpu():
    """The basis values are allocated 64-byte aligned, so that XLA:CPU uses them in place:
    ``jax.device_put(..., may_alias=True)`` returns the same memory (no second copy of the
    largest array of a solve; measured peak RSS 9.0 -> 4.7 GB on a 40-atom methane box)."""
    import jax

    from mofdft_jax.qchem.grids import HOST_ALIGNMENT, aligned_zeros

    for dtype in (np.float64, np.float32):
        a = aligned_zeros((3, 4, 128, 7), dtype)
        assert a.ctypes.data % HOST_ALIGNMENT == 0 and a.dtype == dtype and not a.any()
        a[...] = 1.5
        x = jax.device_put(a, may_alias=True)
        if jax.default_backend() == "cpu":
            assert x.unsafe_buffer_pointer() == a.ctypes.data
        np.testing.assert_array_equal(np.asarray(x), a)

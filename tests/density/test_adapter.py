"""Density adapter (spec §2): invariance, natural reparametrisation, slots, statistics, AtomRef."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pyscf import dft

from mofdft_jax.density import adapter as ad
from mofdft_jax.density.wigner import wigner_d_real
from mofdft_jax.units import HARTREE_TO_KCAL
from pyscf_systems import (ETHANOL, FORMALDEHYDE, METHANE, METHANOL, WATER, make_system,
                           random_rotation)

# jit the composite maps once (tests are drivers); geometries are arguments, never closed over
coeffs_to_slots = jax.jit(ad.coeffs_to_slots)
transform_coeffs = jax.jit(ad.transform_coeffs)
untransform_coeffs = jax.jit(ad.untransform_coeffs)
slots_to_coeffs = jax.jit(ad.slots_to_coeffs)


@pytest.fixture(scope="module")
def ethanol():
    bundle, coeffs = make_system(*ETHANOL)
    return bundle, coeffs, ad.build_adapter_geometry(bundle)


def _dense_rotation(bundle, geometry):
    naux = len(bundle.aux_atom)
    d = np.zeros((naux, naux))
    idx, w = np.asarray(geometry.rot_index), np.asarray(geometry.rot_weight)
    for mu in range(naux):
        np.add.at(d[mu], idx[mu], w[mu])
    return d


def test_transformed_coefficients_are_invariant_under_rotation_and_translation(ethanol, rng):
    """Rotate + translate ethanol, recompute integrals and fitted MINAO p: p′ slots agree."""
    bundle, coeffs, geom = ethanol
    b1, c1 = make_system(*ETHANOL, rotation=random_rotation(rng), shift=[0.7, -1.1, 2.3])
    g1 = ad.build_adapter_geometry(b1)
    s0 = coeffs_to_slots(jnp.asarray(coeffs), geom)
    s1 = coeffs_to_slots(jnp.asarray(c1), g1)
    assert float(jnp.abs(s1 - s0).max()) < 1e-10 * float(jnp.abs(s0).max())
    # without local frames the coefficients are NOT invariant (the test can fail)
    n0 = coeffs_to_slots(jnp.asarray(coeffs), ad.build_adapter_geometry(bundle, False))
    n1 = coeffs_to_slots(jnp.asarray(c1), ad.build_adapter_geometry(b1, False))
    assert float(jnp.abs(n1 - n0).max()) > 1e-2


def test_rotation_blocks_are_wigner_d_of_the_local_frames(ethanol):
    bundle, _, geom = ethanol
    d = _dense_rotation(bundle, geom)
    assert np.abs(d @ d.T - np.eye(len(d))).max() < 1e-13
    # the first p shell of atom 0 is rotated by the atom's frame itself (PySCF p = x, y, z)
    aux_l = np.asarray(bundle.aux_l)
    mu = int(np.nonzero((aux_l == 1) & (np.asarray(bundle.aux_atom) == 0))[0][0])
    from mofdft_jax.density.frames import compute_local_frames
    frames = compute_local_frames(np.asarray(bundle.atom_numbers), np.asarray(bundle.coords))
    rot0 = frames.rotations[0]
    assert np.abs(d[mu:mu + 3, mu:mu + 3] - wigner_d_real(1, rot0)).max() < 1e-14


def test_symmetric_square_root_matches_spec_formula(ethanol, rng):
    """p′ = Mᵀ D p with M = (D W Dᵀ)^{1/2} symmetric (spec §2.2, built densely here)."""
    bundle, coeffs, geom = ethanol
    d = _dense_rotation(bundle, geom)
    w_loc = d @ np.asarray(bundle.overlap) @ d.T
    vals, vecs = np.linalg.eigh(w_loc)
    m = (vecs * np.sqrt(vals)) @ vecs.T
    expected = m.T @ d @ coeffs
    got = np.asarray(transform_coeffs(jnp.asarray(coeffs), geom))
    assert np.abs(got - expected).max() < 1e-11 * np.abs(expected).max()
    # round trip p -> p′ -> p
    back = untransform_coeffs(jnp.asarray(got), geom)
    assert float(jnp.abs(back - coeffs).max()) < 1e-10 * np.abs(coeffs).max()


def test_density_error_norm_equals_euclidean_norm_of_reparametrised_coefficients(rng):
    """∫|Δρ|² (quadrature on a DFT grid) = Δpᵀ W Δp = |Δp′|² (spec §2.2), water."""
    bundle, coeffs = make_system(*WATER)
    geom = ad.build_adapter_geometry(bundle)
    from mofdft_jax.qchem.basis import make_auxmol, make_mol
    from mofdft_jax.molecules import Molecule
    from mofdft_jax.units import ANGSTROM_TO_BOHR
    mol = make_mol(Molecule(numbers=WATER[0], coords_bohr=WATER[1] * ANGSTROM_TO_BOHR), "sto-3g")
    auxmol = make_auxmol(mol)
    grids = dft.gen_grid.Grids(mol)
    grids.level = 5
    grids.build()
    ao = auxmol.eval_gto("GTOval_sph", grids.coords)
    # a smooth perturbation: diffuse functions only (tight ones are not resolved by the grid)
    delta = rng.normal(size=coeffs.shape) * 0.1
    ovlp = np.asarray(bundle.overlap)
    delta[np.diag(ovlp) > 0] *= (np.diag(ovlp)[np.diag(ovlp) > 0] < 2.0)
    delta_rho = ao @ delta
    quad = float(grids.weights @ delta_rho ** 2)
    dp = transform_coeffs(jnp.asarray(delta), geom)
    assert abs(float(dp @ dp) - delta @ ovlp @ delta) < 1e-12 * (delta @ ovlp @ delta)
    assert abs(float(dp @ dp) - quad) < 1e-6 * quad


def test_gradient_transform_is_the_chain_rule(ethanol, rng):
    """For E(p) = aᵀp′(p): transform_gradient(∇_p E) = a, i.e. ∇_{p′} = M⁻¹ D ∇_p."""
    _, coeffs, geom = ethanol
    a = jnp.asarray(rng.normal(size=coeffs.shape))
    grad_p = jax.grad(lambda p: a @ transform_coeffs(p, geom))(jnp.asarray(coeffs))
    assert float(jnp.abs(ad.transform_gradient(grad_p, geom) - a).max()) < 1e-10


def test_slot_layout_and_padding(ethanol):
    bundle, coeffs, geom = ethanol
    slots = coeffs_to_slots(jnp.asarray(coeffs), geom)
    assert slots.shape == (9, 477)
    mask = np.asarray(ad.slot_mask(bundle.atom_numbers))
    assert mask[0, 20:129].all() and mask[0].sum() == 109          # C
    assert mask[2, 245:361].all() and mask[2].sum() == 116         # O
    assert mask[3, 0:20].all() and mask[3].sum() == 20             # H
    assert np.all(np.asarray(slots)[~mask] == 0.0)
    assert np.all(np.asarray(slots)[mask] != 0.0)
    p_prime = transform_coeffs(jnp.asarray(coeffs), geom)
    assert jnp.array_equal(ad.gather_from_slots(slots, geom), p_prime)
    # padded geometry: same slots for the real atoms, zeros for padding, same inverse
    padded = ad.pad_adapter_geometry(geom, 12, 500)
    cpad = jnp.concatenate([jnp.asarray(coeffs), jnp.zeros(46)])
    spad = coeffs_to_slots(cpad, padded)
    assert spad.shape == (12, 477)
    assert float(jnp.abs(spad[:9] - slots).max()) < 1e-12 and not jnp.any(spad[9:])
    back = slots_to_coeffs(spad, padded)
    # both switches off: p′ = p (plain slot layout, the ablation of spec §5.6)
    plain = ad.build_adapter_geometry({"atom_numbers": bundle.atom_numbers, "coords": bundle.coords,
                                       "aux_atom": bundle.aux_atom, "aux_l": bundle.aux_l},
                                      use_local_frames=False, use_reparam=False)
    assert jnp.array_equal(ad.gather_from_slots(coeffs_to_slots(jnp.asarray(coeffs), plain), plain),
                           jnp.asarray(coeffs))
    assert float(jnp.abs(back[:454] - coeffs).max()) < 1e-10
    assert float(jnp.abs(back[454:]).max()) < 1e-12


def test_slot_layout_rejects_a_foreign_density_basis(ethanol):
    bundle, _, _ = ethanol
    short = bundle._replace(aux_atom=bundle.aux_atom[:-5], aux_l=bundle.aux_l[:-5], overlap=None)
    with pytest.raises(ValueError, match="atom 8 .* carries 15 density-basis functions"):
        ad.build_adapter_geometry(short, use_reparam=False)


def _dense_transform(bundle, geom):
    """A with p′ = A p, built densely on the host from the geometry arrays (D W^{1/2})."""
    q, s = np.asarray(geom.overlap_vecs), np.asarray(geom.overlap_sqrt_vals)
    return _dense_rotation(bundle, geom) @ (q * s) @ q.T


def _linear_labels(bundle, geom, nstep, rng, gbar, offsets, global_offset):
    """Random p⁽ᵏ⁾ and exactly linear labels E = ḡᵀp′ + Σ T̄_Z + T̄_global (kcal/mol → Ha)."""
    naux = len(bundle.aux_atom)
    coeffs = rng.normal(size=(nstep, naux))
    gaux = gbar[np.asarray(geom.aux_slot)]
    a = _dense_transform(bundle, geom)
    elem = np.asarray(ad.element_index(bundle.atom_numbers))
    const = offsets[elem].sum() + global_offset
    energies = coeffs @ a.T @ gaux + const
    grads = np.tile(a.T @ gaux, (nstep, 1))  # ∂E/∂p = Aᵀ ḡ
    return ad.LabelledGeometry(atom_numbers=np.asarray(bundle.atom_numbers), geometry=geom,
                               coeffs=coeffs, grads=grads / HARTREE_TO_KCAL,
                               energies=energies / HARTREE_TO_KCAL)


def test_atomref_recovers_mean_gradient_and_element_offsets(rng):
    """Linear labels with varying composition: ḡ, T̄_Z, T̄_global recovered; λ = 1 (g = 0)."""
    gbar = rng.normal(size=477) * 100.0
    offsets = np.array([-300.0, -23887.0, 0.0, -47000.0, 0.0])
    samples = []
    for system in (WATER, METHANE, METHANOL, FORMALDEHYDE):
        bundle, _ = make_system(*system)
        geom = ad.build_adapter_geometry(bundle)
        samples.append(_linear_labels(bundle, geom, 2, rng, gbar, offsets, 12.5))
    stats = ad.compute_statistics(samples)
    seen = np.r_[0:20, 20:129, 245:361]
    assert np.allclose(np.asarray(stats.grad_mean)[seen], gbar[seen], rtol=1e-9, atol=1e-9)
    assert np.all(np.asarray(stats.grad_mean)[129:245] == 0.0)          # N unseen
    assert np.allclose(np.asarray(stats.element_offsets), offsets, atol=1e-6)
    assert abs(float(stats.global_offset) - 12.5) < 1e-6
    assert np.asarray(stats.element_seen).tolist() == [True, True, False, True, False]
    assert np.all(np.asarray(stats.scale) == 1.0)
    # AtomRef then reproduces every label exactly
    for s in samples:
        for c, e in zip(s.coeffs, s.energies):
            slots = coeffs_to_slots(jnp.asarray(c), s.geometry)
            ref = jax.jit(ad.atomref_energy)(slots, jnp.asarray(s.atom_numbers), stats)
            assert abs(float(ref) - e * HARTREE_TO_KCAL) < 1e-6 * abs(e * HARTREE_TO_KCAL)


def test_fixed_composition_fits_only_the_global_offset(ethanol, rng):
    bundle, _, geom = ethanol
    gbar = np.zeros(477)
    offsets = np.array([-300.0, -23887.0, 0.0, -47000.0, 0.0])
    sample = _linear_labels(bundle, geom, 3, rng, gbar, offsets, 0.0)
    stats = ad.compute_statistics([sample, sample])
    assert np.all(np.asarray(stats.element_offsets) == 0.0)
    assert abs(float(stats.global_offset) - (6 * -300.0 + 2 * -23887.0 - 47000.0)) < 1e-6


def test_centring_and_scaling_statistics(ethanol, rng):
    """p̄, std, g = max|g′ - ḡ|, λ = min(g/s_grad, s_coeff/std) if g > s_grad else 1, Δ stats."""
    bundle, coeffs, geom = ethanol
    nstep = 4
    p = coeffs[None] + rng.normal(size=(nstep, len(coeffs))) * 0.01
    grads = rng.normal(size=p.shape) * 0.05
    sample = ad.LabelledGeometry(atom_numbers=np.asarray(bundle.atom_numbers), geometry=geom,
                                 coeffs=p, grads=grads, energies=rng.normal(size=nstep),
                                 ground_coeffs=coeffs)
    stats = ad.compute_statistics([sample])
    mask = np.asarray(ad.slot_mask(bundle.atom_numbers))
    ps = np.stack([np.asarray(coeffs_to_slots(jnp.asarray(c), geom)) for c in p])
    gs = np.stack([np.asarray(jax.jit(ad.gradient_to_slots)(jnp.asarray(g), geom)) for g in grads])
    gs *= HARTREE_TO_KCAL
    ds = np.asarray(coeffs_to_slots(jnp.asarray(coeffs), geom))[None] - ps
    for tau in (0, 7, 25, 300):  # H s, H p, C s, O
        atoms = np.nonzero(mask[:, tau])[0]
        vals, gvals, dvals = ps[:, atoms, tau], gs[:, atoms, tau], ds[:, atoms, tau]
        assert np.isclose(float(stats.coeff_mean[tau]), vals.mean(), rtol=1e-12)
        assert np.isclose(float(stats.coeff_std[tau]), vals.std(), rtol=1e-10)
        assert np.isclose(float(stats.grad_mean[tau]), gvals.mean(), rtol=1e-12)
        g = np.abs(gvals - gvals.mean()).max()
        assert np.isclose(float(stats.grad_scale[tau]), g, rtol=1e-12)
        lam = min(g / 0.05, 50.0 / vals.std()) if g > 0.05 else 1.0
        assert np.isclose(float(stats.scale[tau]), lam, rtol=1e-10)
        assert np.isclose(float(stats.delta_mean[tau]), dvals.mean(), rtol=1e-10, atol=1e-14)
        assert np.isclose(float(stats.delta_std[tau]), dvals.std(), rtol=1e-10)
    assert np.any(np.asarray(stats.scale) > 1.0)
    # mean-|g| variant (Eq. 5) differs and is smaller than the max
    mean_stats = ad.compute_statistics([sample], grad_scale_kind="mean")
    assert np.all(np.asarray(mean_stats.grad_scale) <= np.asarray(stats.grad_scale) + 1e-12)
    # standardisation uses them: p̃ = λ (p′ - p̄) on own slots only
    pt = ad.standardise_coeffs(jnp.asarray(ps[0]), bundle.atom_numbers, stats)
    expected = np.where(mask, (ps[0] - np.asarray(stats.coeff_mean)) * np.asarray(stats.scale), 0)
    assert np.allclose(np.asarray(pt), expected, rtol=1e-14, atol=0)

"""Thermal normal-mode sampling and rigid scans: seeded, physical, realistic geometries."""

import numpy as np
import pytest

from mofdft_jax.molecules import (
    bond_scan,
    find_chain,
    internal_modes,
    molecule_from_smiles,
    sample_thermal_conformers,
    torsion_scan,
)
from mofdft_jax.molecules.geometry import bond_angle, dihedral, kabsch_align
from mofdft_jax.molecules.sampling import (
    BOLTZMANN_KCAL_PER_MOL_K,
    bond_length_deviations,
    mmff_energy_and_gradient_fn,
)


@pytest.fixture(scope="module")
def ethanol_modes():
    return internal_modes(molecule_from_smiles("CCO", seed=1, name="ethanol"))


def test_zmatrix_round_trip_and_internal_hessian(ethanol_modes):
    """Z-matrix <-> Cartesian is exact; the internal Hessian is positive definite with the stiffest
    mode an X-H stretch (MMFF k ~ 1e3 kcal/mol/A^2) and 3N-6 = 21 coordinates."""
    modes = ethanol_modes
    x = modes.reference.coords_angstrom
    assert modes.zmatrix.n_internal == 21 == len(modes.q0)
    np.testing.assert_allclose(modes.zmatrix.to_cartesian(modes.zmatrix.to_internal(x)), x,
                               atol=1e-12)
    assert modes.eigenvalues[0] > 0.5  # a minimum: all curvatures positive (kcal/mol/rad^2)
    assert 500 < modes.eigenvalues[-1] < 2000


def test_kabsch_recovers_a_rigid_motion(rng):
    x = rng.standard_normal((9, 3))
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.linalg.det(q))
    np.testing.assert_allclose(kabsch_align(x @ q.T + [1.0, -2.0, 0.5], x), x, atol=1e-12)


def test_same_seed_identical_samples(ethanol_modes):
    mol = ethanol_modes.reference
    a = sample_thermal_conformers(mol, 5, temperature_k=500, seed=11, modes=ethanol_modes)
    b = sample_thermal_conformers(mol, 5, temperature_k=500, seed=11, modes=ethanol_modes)
    c = sample_thermal_conformers(mol, 5, temperature_k=500, seed=12, modes=ethanol_modes)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u.coords_bohr, v.coords_bohr)
    assert np.abs(a[0].coords_bohr - c[0].coords_bohr).max() > 1e-2
    assert a[3].name == "ethanol-T500-3" and a[0].formula == "C2H6O"


def test_equipartition_realistic_bonds_and_temperature_scaling(ethanol_modes):
    """Physics of the sampler on ethanol (2000 draws per temperature):

    - the mean MMFF energy above the minimum is the classical equipartition value (3N-6) k_B T / 2
      within 5 % (measured 0.995 at 300 K, 0.991 at 500 K: MMFF is nearly harmonic at these
      amplitudes once torsions are sampled as angles);
    - bond lengths stay realistic: RMS relative deviation < 3 % (300 K) / < 4 % (500 K)
      (measured 2.5 % / 3.3 %; classical C-H stretch sigma = sqrt(kT/k) ~ 0.035 A at 500 K) and no
      draw beyond 20 %;
    - no atom pair closer than 0.5 A; the RMS displacement grows as sqrt(T) within 5 %.
    """
    modes = ethanol_modes
    ref = modes.reference
    energy_fn = mmff_energy_and_gradient_fn(ref)
    rms = {}
    for temperature, rms_bond_max in ((300.0, 0.03), (500.0, 0.04)):
        samples = sample_thermal_conformers(ref, 2000, temperature_k=temperature, seed=5,
                                            modes=modes)
        de = np.array([energy_fn(s.coords_angstrom)[0] for s in samples]) - modes.energy_kcal
        equipartition = 21 * BOLTZMANN_KCAL_PER_MOL_K * temperature / 2
        assert de.mean() / equipartition == pytest.approx(1.0, abs=0.05)
        dev = bond_length_deviations(ref, samples)
        assert np.sqrt((dev**2).mean()) < rms_bond_max
        assert np.abs(dev).max() < 0.20
        xs = np.stack([s.coords_angstrom for s in samples])
        iu, ju = np.triu_indices(ref.natm, 1)
        assert np.linalg.norm(xs[:, iu] - xs[:, ju], axis=-1).min() > 0.5
        rms[temperature] = np.sqrt(((xs - ref.coords_angstrom) ** 2).sum(-1).mean())
    assert rms[500.0] / rms[300.0] == pytest.approx(np.sqrt(500 / 300), rel=0.05)
    zero = sample_thermal_conformers(ref, 1, temperature_k=0.0, seed=0, modes=modes)[0]
    np.testing.assert_allclose(zero.coords_bohr, ref.coords_bohr, atol=1e-12)


def test_ethanol_torsion_and_oh_stretch_scans(ethanol_modes):
    """Rigid H-C-C-O torsion scan in 15 degree steps and O-H scan in 0.015 A steps around the MMFF
    minimum: the scanned coordinate takes exactly the requested values, nothing else changes."""
    mol = ethanol_modes.reference
    x0 = mol.coords_angstrom
    h, c1, c2, o = find_chain(mol, "H-C-C-O")
    assert mol.symbols[h] == "H" and mol.symbols[o] == "O"
    scan = torsion_scan(mol, (h, c1, c2, o), step_deg=15.0)
    assert len(scan) == 24
    phi0 = np.degrees(dihedral(*(x0[k] for k in (h, c1, c2, o))))
    for m, s in enumerate(scan):
        x = s.coords_angstrom
        phi = np.degrees(dihedral(*(x[k] for k in (h, c1, c2, o))))
        assert (phi - phi0 - 15.0 * m + 180.0) % 360.0 - 180.0 == pytest.approx(0.0, abs=1e-9)
        # rigid: all bond lengths and the C-C-O angle unchanged
        np.testing.assert_allclose(bond_length_deviations(mol, [s]), 0.0, atol=1e-12)
        assert bond_angle(x[c1], x[c2], x[o]) == pytest.approx(bond_angle(x0[c1], x0[c2], x0[o]))
    np.testing.assert_allclose(scan[0].coords_bohr, mol.coords_bohr, atol=1e-12)

    o_idx, h_idx = find_chain(mol, "O-H")
    stretch = bond_scan(mol, (o_idx, h_idx))
    r0 = np.linalg.norm(x0[h_idx] - x0[o_idx])
    r = [np.linalg.norm(s.coords_angstrom[h_idx] - s.coords_angstrom[o_idx]) for s in stretch]
    np.testing.assert_allclose(np.diff(r), 0.015, atol=1e-12)
    assert r[10] == pytest.approx(r0, abs=1e-12) and len(r) == 31
    moved = np.abs(stretch[-1].coords_angstrom - x0).max(axis=1) > 1e-12
    assert moved.sum() == 1 and moved[h_idx]

"""Recorded KS-DFT (spec §1.1, §1.3, §1.7; environment_notes §7).

The recorder must not change the SCF, must pair every step's density with the Fock matrix that
produced it, and its DIIS weights must rebuild PySCF's extrapolated Fock exactly.
"""

import json

import numpy as np
import pytest
from pyscf import dft

from mofdft_jax.molecules import Molecule
from mofdft_jax.qchem.basis import make_mol
from mofdft_jax.qchem.ksdft import make_ks, run_ks
from mofdft_jax.qchem.settings import PAPER_SETTINGS, LabelSettings

ETHANOL = Molecule.from_angstrom(
    [6, 6, 8, 1, 1, 1, 1, 1, 1],
    [[0.9011, -0.075, 0.0144], [-0.5844, -0.3678, 0.0562], [-1.3058, 0.8221, 0.3398],
     [1.2367, 0.3507, 0.9658], [1.1285, 0.6626, -0.7623], [1.4724, -0.9854, -0.1868],
     [-0.8088, -1.0977, 0.8394], [-0.9322, -0.7699, -0.9002], [-1.1074, 1.4606, -0.3663]],
    name="ethanol")
#: Small ring (3 slots) so the DIIS buffer wraps around within the run; a tight threshold so the
#: run has enough steps.
SETTINGS = LabelSettings(basis="6-31G", grid_level=1, diis_space=3, conv_tol=1e-9)


@pytest.fixture(scope="module")
def ethanol_run():
    return run_ks(ETHANOL, SETTINGS)


def test_recording_does_not_change_the_scf(ethanol_run):
    mf = make_ks(make_mol(ETHANOL, SETTINGS.basis), SETTINGS)
    mf.kernel()
    assert ethanol_run.mf.e_tot == pytest.approx(mf.e_tot, abs=1e-10)
    assert ethanol_run.n_cycles == mf.cycles
    np.testing.assert_allclose(ethanol_run.dm, mf.make_rdm1(), atol=1e-10)


def test_diis_buffer_wrapped(ethanol_run):
    """Some step combines Fock matrices from non-consecutive slots (the ring was reused)."""
    assert ethanol_run.n_steps > SETTINGS.diis_space + 2
    wrapped = [k for k in range(1, ethanol_run.n_steps + 1)
               if len(ethanol_run.diis_steps[k]) == SETTINGS.diis_space
               and list(ethanol_run.diis_steps[k]) != sorted(ethanol_run.diis_steps[k])]
    assert wrapped


def test_diis_weights_reproduce_the_diagonalised_fock(ethanol_run):
    run = ethanol_run
    for k in range(1, run.n_steps + 1):
        steps, weights = run.diis_steps[k], run.diis_weights[k]
        assert np.all(steps < k)
        assert weights.sum() == pytest.approx(1.0, abs=1e-10)
        rebuilt = np.einsum("i,ipq->pq", weights, run.focks[steps])
        np.testing.assert_allclose(rebuilt, run.fock_diag[k], rtol=0, atol=1e-10)
    # the first step diagonalises the initial-guess Fock, the last (PySCF's extra diagonalisation
    # after convergence) the previous step's Fock, both unmixed
    assert run.diis_steps[1].tolist() == [0] and run.diis_weights[1].tolist() == [1.0]
    assert run.diis_steps[-1].tolist() == [run.n_steps - 1]


def test_each_density_is_the_ground_state_of_its_fock(ethanol_run):
    """D⁽ᵏ⁾ = 2 C_occ C_occᵀ with F̃⁽ᵏ⁾ C = S C ε: F̃ D S = S D F̃ and tr(D S) = N."""
    run = ethanol_run
    s = run.mol.intor("int1e_ovlp")
    for k in range(1, run.n_steps + 1):
        f, d = run.fock_diag[k], run.dms[k]
        comm = f @ d @ s - s @ d @ f
        assert np.abs(comm).max() < 1e-8
        assert np.trace(d @ s) == pytest.approx(run.mol.nelectron, abs=1e-8)
        # aufbau: D is the projector on the N/2 lowest eigenvectors of F̃
        e, c = np.linalg.eigh(np.linalg.inv(np.linalg.cholesky(s)) @ f
                              @ np.linalg.inv(np.linalg.cholesky(s)).T)
        c = np.linalg.inv(np.linalg.cholesky(s)).T @ c
        nocc = run.mol.nelectron // 2
        np.testing.assert_allclose(2 * c[:, :nocc] @ c[:, :nocc].T, d, atol=1e-8)


def test_step_energies_from_explicit_terms(ethanol_run):
    run = ethanol_run
    mol = run.mol
    np.testing.assert_allclose(run.energies["e_tot"], run.pyscf_e_tot, atol=1e-9)
    # independent recomputation of one middle step: exact J, PySCF numint XC, one-electron traces
    k = run.n_steps // 2
    d = run.dms[k]
    mf = dft.RKS(mol)
    mf.xc, mf.grids = "pbe", run.mf.grids
    vj = mf.get_j(mol, d)
    _, exc, _ = mf._numint.nr_rks(mol, run.mf.grids, "pbe", d)
    ref = {"kinetic": np.einsum("ij,ji", d, mol.intor("int1e_kin")),
           "external": np.einsum("ij,ji", d, mol.intor("int1e_nuc")),
           "hartree": 0.5 * np.einsum("ij,ji", d, vj), "xc": exc, "e_nuc": mol.energy_nuc()}
    for key, value in ref.items():
        assert run.energies[key][k] == pytest.approx(value, abs=1e-9), key
    assert run.energies["e_tot"][k] == pytest.approx(sum(ref.values()), abs=1e-9)
    assert run.energies["e_tot"][-1] == pytest.approx(run.mf.e_tot, abs=1e-10)


def test_density_fitting_path_records_too():
    water = Molecule.from_angstrom([8, 1, 1], [[0, 0, 0], [0, 0.757, 0.587], [0, -0.757, 0.587]])
    settings = LabelSettings(basis="6-31G", grid_level=1, density_fit=True)
    run = run_ks(water, settings)
    assert type(run.mf).__name__.startswith("DF") or hasattr(run.mf, "with_df")
    assert run.converged
    np.testing.assert_allclose(run.energies["e_tot"], run.pyscf_e_tot, atol=1e-9)
    for k in range(1, run.n_steps + 1):
        rebuilt = np.einsum("i,ipq->pq", run.diis_weights[k], run.focks[run.diis_steps[k]])
        np.testing.assert_allclose(rebuilt, run.fock_diag[k], atol=1e-10)


def test_paper_settings():
    assert PAPER_SETTINGS.basis == "6-31G(2df,p)" and PAPER_SETTINGS.xc == "pbe"
    assert PAPER_SETTINGS.grid_level == 2 and PAPER_SETTINGS.init_guess == "minao"
    assert PAPER_SETTINGS.conv_tol == pytest.approx(1e-3 / 27.211386245988, rel=1e-6)
    assert not PAPER_SETTINGS.uses_density_fit(30) and PAPER_SETTINGS.uses_density_fit(31)
    assert PAPER_SETTINGS.df_auxbasis == "def2-universal-jfit"


def test_open_shell_is_refused():
    from mofdft_jax.molecules import InputError

    with pytest.raises(InputError, match="open-shell"):
        run_ks(Molecule.from_angstrom([1], [[0, 0, 0]], name="h-atom", spin=1),
               LabelSettings(basis="sto-3g", grid_level=0))


def test_ks_command_json(tmp_path):
    from mofdft_jax.cli import main

    path = tmp_path / "water.xyz"
    path.write_text("3\nwater\nO 0 0 0\nH 0 0.757 0.587\nH 0 -0.757 0.587\n")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["ks", str(path), "--json", "--basis", "sto-3g", "--grid-level", "1"])
    assert code == 0
    data = json.loads(out.getvalue())
    for key in ("energy_total_ha", "kinetic_ha", "hartree_ha", "xc_ha", "external_ha",
                "nuclear_repulsion_ha", "n_scf_steps", "converged", "wall_s"):
        assert key in data
    parts = sum(data[k] for k in ("kinetic_ha", "hartree_ha", "xc_ha", "external_ha",
                                  "nuclear_repulsion_ha"))
    assert data["energy_total_ha"] == pytest.approx(parts, abs=1e-10)
    assert data["converged"] and data["settings"]["basis"] == "sto-3g"
    # PySCF's own energy for the same settings
    mf = make_ks(make_mol(Molecule.from_angstrom([8, 1, 1], [[0, 0, 0], [0, 0.757, 0.587],
                                                             [0, -0.757, 0.587]]), "sto-3g"),
                 PAPER_SETTINGS.replace(basis="sto-3g", grid_level=1))
    assert data["energy_total_ha"] == pytest.approx(mf.kernel(), abs=1e-9)


def test_ks_command_bad_input(tmp_path, capsys):
    from mofdft_jax.cli import main

    path = tmp_path / "bad.xyz"
    path.write_text("2\nbad\nO 0 0 0\nCl 0 0 1.7\n")
    assert main(["ks", str(path)]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.gpu
def test_gpu4pyscf_gives_the_same_energies(ethanol_run):
    """gpu4pyscf (``use_gpu``) runs the same settings; energies agree with the CPU run."""
    run = run_ks(ETHANOL, SETTINGS.replace(use_gpu=True))
    assert run.energies["e_tot"][-1] == pytest.approx(ethanol_run.energies["e_tot"][-1], abs=1e-7)
    for k in range(1, run.n_steps + 1):
        rebuilt = np.einsum("i,ipq->pq", run.diis_weights[k], run.focks[run.diis_steps[k]])
        np.testing.assert_allclose(rebuilt, run.fock_diag[k], atol=1e-9)


# -- what mofdft ks reports beside the energy: forces, dipole, orbital energies, density cube --

WATER = Molecule.from_angstrom([8, 1, 1], [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692],
                                           [0.0, -0.7572, -0.4692]], name="water")
#: Tight SCF and a fine grid: finite differences resolve 1e-5 Ha/Bohr.
TIGHT = LabelSettings(basis="6-31G", grid_level=3, conv_tol=1e-11)


@pytest.fixture(scope="module")
def water_observables():
    from mofdft_jax.qchem.ksdft import ks_observables

    run = run_ks(WATER, TIGHT)
    return run, ks_observables(run)


def _energy_of(molecule, field_z: float = 0.0) -> float:
    """KS energy of ``molecule`` in a uniform field F = field_z ẑ (electrons: +F z in h; nuclei:
    -F Σ Z_a z_a)."""
    mol = make_mol(molecule, TIGHT.basis)
    mf = make_ks(mol, TIGHT)
    mf.verbose = 0
    if field_z:
        h = mf.get_hcore() + field_z * mol.intor_symmetric("int1e_r", comp=3)[2]
        mf.get_hcore = lambda *args: h
    e = mf.kernel()
    return e - field_z * float(mol.atom_charges() @ mol.atom_coords()[:, 2])


def test_ks_forces_are_minus_the_energy_gradient(water_observables):
    """Analytic forces (PySCF gradients) against central differences of the KS energy along
    the O z and H y coordinates, and a net force ~0 (no grid response: 1e-4 at grid 3)."""
    import dataclasses

    run, obs = water_observables
    forces = obs["forces_ha_per_bohr"]
    h = 1e-3  # Bohr
    for atom, axis in ((0, 2), (1, 1)):
        energies = []
        for sign in (1, -1):
            coords = np.array(WATER.coords_bohr, dtype=float)
            coords[atom, axis] += sign * h
            energies.append(_energy_of(dataclasses.replace(WATER, coords_bohr=coords)))
        assert forces[atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * h),
                                                   abs=1e-4)
    assert np.abs(forces.sum(axis=0)).max() < 1e-4
    assert forces[1, 1] == pytest.approx(-forces[2, 1], abs=1e-6)  # mirror plane y = 0


def test_ks_dipole_is_minus_the_field_derivative_of_the_energy(water_observables):
    """μ_z = -dE/dF_z by central differences in a uniform field; μ along the C2 axis, pointing
    from O (+z) to the hydrogens (-z): the minus-to-plus convention."""
    run, obs = water_observables
    mu = obs["dipole_au"]
    f = 1e-4
    mu_z = -(_energy_of(WATER, f) - _energy_of(WATER, -f)) / (2 * f)
    assert mu[2] == pytest.approx(mu_z, abs=2e-5)
    assert abs(mu[0]) < 1e-6 and abs(mu[1]) < 1e-6 and mu[2] < -0.5


def test_ks_orbital_energies_and_gap(water_observables):
    """HOMO = ε of orbital N/2, LUMO = the next, gap = their difference and positive; the
    orbitals are eigenvalues of the final Fock matrix F C = S C ε."""
    import scipy.linalg

    run, obs = water_observables
    eps = np.sort(obs["mo_energy_ha"])
    nocc = WATER.n_electrons // 2
    assert obs["homo_ha"] == pytest.approx(eps[nocc - 1], abs=1e-12)
    assert obs["lumo_ha"] == pytest.approx(eps[nocc], abs=1e-12)
    assert obs["gap_ha"] == pytest.approx(eps[nocc] - eps[nocc - 1]) and obs["gap_ha"] > 0.1
    fock = run.mf.get_fock(dm=run.dm)
    ref = scipy.linalg.eigh(fock, run.mf.get_ovlp(), eigvals_only=True)
    np.testing.assert_allclose(eps, ref, atol=1e-6)


def test_ks_command_reports_observables_and_writes_a_density_cube(tmp_path):
    """``mofdft ks --json --cube``: one JSON line with the schema key, dipole, gap and forces;
    the cube integrates to the electron count."""
    import contextlib
    import io

    from mofdft_jax.cli import main
    from mofdft_jax.qchem.cube import read_cube

    path = tmp_path / "water.xyz"
    path.write_text("3\nwater\nO 0.0 0.0 0.1173\nH 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["ks", str(path), "--json", "--basis", "6-31g", "--grid-level", "1",
                     "--cube", str(tmp_path / "rho.cube")])
    assert code == 0
    text = out.getvalue()
    assert text.count("\n") == 1  # one line
    data = json.loads(text)
    assert data["schema"] == "mofdft.ks/1"
    assert data["dipole_norm_debye"] == pytest.approx(np.linalg.norm(data["dipole_debye"]))
    assert 1.5 < data["dipole_norm_debye"] < 3.0 and data["gap_ev"] > 3
    assert np.array(data["forces_ha_per_bohr"]).shape == (3, 3)
    assert data["net_force_ha_per_bohr"] < 1e-3
    cube = read_cube(tmp_path / "rho.cube")
    assert cube.integrate() == pytest.approx(10.0, rel=2e-2)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file

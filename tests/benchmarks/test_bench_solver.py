"""Benchmarks of the OFDFT solver (issue 5).

1. Ethanol, APBE kinetic + PBE XC on a level-2 grid, MINAO start, 1000 projected-gradient steps
   (the paper's classical-baseline protocol; its learned T_S,res version needs 29.7 s per structure
   on an A100). Target ≤ 15 s on the 2-core CPU. Reported as the ratio to a PySCF KS run of the same
   molecule with the paper's settings (PBE/6-31G(2df,p), grid level 2, 1 meV), timed in the same
   process, interleaved round by round.
2. Time per step of the grid-free terms (Hartree + external: the per-step cost of the TXC / total
   energy variants besides the network) against molecule size, five alkanes from ethanol (26
   electrons) to C60H122 (482), fastest of two 1000-step runs each, with the fitted exponent in the
   electron count (target ≤ 1.3), the local exponent between the two largest sizes, and the
   operator memory. The compressed operator's near field grows linearly, its far-field tensor T
   (one row per atom multipole component) quadratically: 1.6 / 17.5 / 54 MB of 13 / 73 / 149 MB
   at 32 / 104 / 182 atoms (1.15 of 2.1 GB for the 709-atom protein), so its exponent creeps up
   with size.

Run: ``pytest -m benchmark -s tests/benchmarks/test_bench_solver.py``. The assertions guard against
regressions relative to the in-process reference (see the constants); the targets are reported in
``extra_info`` and printed, measured numbers in the final report of issue 5.
"""

import time

import jax
import numpy as np
import pytest

from mofdft_jax.molecules import Molecule
from mofdft_jax.molecules.io import read_molecules
from mofdft_jax.qchem.basis import make_auxmol, make_mol
from mofdft_jax.qchem.guesses import fastminao_guess, minao_guess
from mofdft_jax.qchem.integrals import build_integral_bundle
from mofdft_jax.qchem.ksdft import make_ks
from mofdft_jax.qchem.settings import PAPER_SETTINGS
from mofdft_jax.solver import make_energy_fn, solve

ETHANOL = Molecule.from_angstrom(
    [6, 6, 8, 1, 1, 1, 1, 1, 1],
    [[0.9011, -0.075, 0.0144], [-0.5844, -0.3678, 0.0562], [-1.3058, 0.8221, 0.3398],
     [1.2367, 0.3507, 0.9658], [1.1285, 0.6626, -0.7623], [1.4724, -0.9854, -0.1868],
     [-0.8088, -1.0977, 0.8394], [-0.9322, -0.7699, -0.9002], [-1.1074, 1.4606, -0.3663]],
    name="ethanol")
TARGET_ETHANOL_S = 15.0
TARGET_EXPONENT = 1.3
#: Regression guard: OFDFT 1000 steps / KS-DFT wall time. Measured 20.1 (692 s vs 34.4 s, one core
#: of the shared 2-core machine under load ~20; 0.69 s per step streaming 0.96 GB of basis values
#: twice): the 15 s target is out of reach for float64 basis values on this CPU.
MAX_RATIO_ETHANOL = 60.0
#: Regression guard on the grid-free exponent in electrons (dense W̃: ≤ 2 asymptotically).
#: Measured 2026-11-26 (idle 2-core VM; five alkanes, 26-482 e): dense 1.84, compressed operator
#: 1.31 (9.1 ms/step at 482 e vs 20.9 ms dense; 1.08 between the two largest sizes); memory
#: exponents 2.04 and 1.51.
MAX_EXPONENT_GRID_FREE = 2.3


@pytest.mark.benchmark
def test_ethanol_apbe_1000_steps_vs_ks(benchmark):
    settings = PAPER_SETTINGS
    mol = make_mol(ETHANOL, settings.basis)
    auxmol = make_auxmol(mol)
    t0 = time.perf_counter()
    bundle = build_integral_bundle(mol, auxmol, grid_level=2, with_forces=False,
                                   with_overlap=False)
    p0 = minao_guess(mol, auxmol).coeffs
    setup_s = time.perf_counter() - t0
    terms_fn, _ = make_energy_fn("apbe", xc="pbe")
    t0 = time.perf_counter()
    solve(terms_fn, p0, bundle, steps=3)  # compile (the 1000-step run shares nothing but the fn)
    compile_s = time.perf_counter() - t0

    ks_s, ofdft_s, results, ks_e = [], [], [], []

    def one_round():
        t = time.perf_counter()
        mf = make_ks(make_mol(ETHANOL, settings.basis), settings)
        mf.kernel()
        ks_s.append(time.perf_counter() - t)
        ks_e.append(float(mf.e_tot))
        t = time.perf_counter()
        res = solve(terms_fn, p0, bundle, steps=1000, lr=1e-3)
        ofdft_s.append(time.perf_counter() - t)
        results.append(res)
        assert mf.converged

    benchmark.pedantic(one_round, rounds=2, iterations=1)
    res = results[-1]
    assert res.status != "diverged" and np.isfinite(res.energy)
    assert np.abs(res.trajectory.n_electrons - mol.nelectron).max() < 1e-10
    ratio = float(np.median(ofdft_s) / np.median(ks_s))

    # the explicit float32 grid-values option, outside the timed rounds (same points, same start)
    single = bundle._replace(grid=bundle.grid._replace(ao=bundle.grid.ao.astype(np.float32)))
    solve(terms_fn, p0, single, steps=3)
    t = time.perf_counter()
    res32 = solve(terms_fn, p0, single, steps=1000, lr=1e-3)
    f32_s = time.perf_counter() - t
    assert np.abs(res32.trajectory.n_electrons - mol.nelectron).max() < 1e-10
    assert abs(res32.energy_final - res.energy_final) < 1e-4
    info = {"ofdft_1000_steps_s": ofdft_s, "ks_s": ks_s, "ratio_ofdft_over_ks": ratio,
            "compile_s": compile_s, "setup_s": setup_s,
            "ms_per_step": 1e3 * float(np.median(ofdft_s)) / 1001,
            "n_grid_points": int(np.count_nonzero(np.asarray(bundle.grid.weights))),
            "naux": int(bundle.norm.shape[0]), "target_s": TARGET_ETHANOL_S,
            "meets_target": bool(np.median(ofdft_s) <= TARGET_ETHANOL_S),
            "energy_ha": res.energy, "e_ks_ha": ks_e[-1],
            "error_kcal": (res.energy - ks_e[-1]) * 627.5094740630558,
            "ofdft_1000_steps_f32_grid_s": f32_s,
            "f32_grid_final_energy_diff_ha": res32.energy_final - res.energy_final}
    benchmark.extra_info.update(info)
    print(f"\nethanol APBE+PBE level 2: 1000 steps {np.median(ofdft_s):.1f} s "
          f"({info['ms_per_step']:.1f} ms/step, {info['n_grid_points']} points, naux "
          f"{info['naux']}), compile {compile_s:.1f} s, setup {setup_s:.1f} s; PySCF KS "
          f"{np.median(ks_s):.1f} s; ratio {ratio:.2f}; target {TARGET_ETHANOL_S:.0f} s "
          f"{'met' if info['meets_target'] else 'NOT met'}; float32 grid values (option) "
          f"{f32_s:.1f} s, final energy {info['f32_grid_final_energy_diff_ha']:+.1e} Ha")
    assert ratio <= MAX_RATIO_ETHANOL


SIZE_SERIES = [("ethanol", "CCO"), ("decane", "C" * 10), ("C20H42", "C" * 20),
               ("C34H70", "C" * 34), ("C60H122", "C" * 60)]
#: Timed 1000-step runs per size and operator (the fastest counts: noise only adds time).
TIMED_RUNS = 2


@pytest.mark.benchmark
def test_grid_free_time_per_step_vs_size(benchmark):
    """Hartree + external (+ E_nn) per step, fitted t ∝ N_e^k, and the Coulomb-operator memory,
    for the dense W̃ and for the compressed operator (exact near field + multipole far field,
    :mod:`mofdft_jax.qchem.coulomb_blocks`) that large molecules use."""
    from mofdft_jax.functionals.coulomb_fmm import compressed_coulomb_nbytes
    from mofdft_jax.qchem.coulomb_blocks import build_compressed_coulomb

    terms_fn, _ = make_energy_fn(None, include=("hartree", "external"))
    rows = []

    def time_steps(p0, bundle):
        solve(terms_fn, p0, bundle, steps=3)  # compile for this shape (steps are dynamic)
        times = []
        for _ in range(TIMED_RUNS):
            t = time.perf_counter()
            res = solve(terms_fn, p0, bundle, steps=1000)
            times.append(time.perf_counter() - t)
        assert res.status != "diverged"
        assert np.abs(res.trajectory.n_electrons - float(bundle.n_electrons)).max() < 1e-10
        return 1e3 * min(times) / 1001, res.energy

    def run_all():
        rows.clear()
        for name, smiles in SIZE_SERIES:
            molecule = read_molecules(f"smiles:{smiles}")[0]
            mol = make_mol(molecule, "sto-3g")  # orbital basis only matters for the guess
            auxmol = make_auxmol(mol)
            bundle = build_integral_bundle(mol, auxmol, grid_level=None, with_forces=False,
                                           with_overlap=False)
            p0 = fastminao_guess(mol, auxmol).coeffs
            dense_ms, dense_e = time_steps(p0, bundle)
            compressed = build_compressed_coulomb(auxmol)
            fmm_ms, fmm_e = time_steps(p0, bundle._replace(coulomb=compressed))
            assert abs(fmm_e - dense_e) < 1e-8 * abs(dense_e)
            rows.append({"molecule": name, "natm": mol.natm, "n_electrons": mol.nelectron,
                         "naux": auxmol.nao_nr(), "dense_ms_per_step": dense_ms,
                         "compressed_ms_per_step": fmm_ms,
                         "dense_mb": bundle.coulomb.nbytes / 1e6,
                         "compressed_mb": compressed_coulomb_nbytes(compressed) / 1e6})

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    ne = np.array([r["n_electrons"] for r in rows], dtype=float)

    def slope(key):
        return float(np.polyfit(np.log(ne), np.log([r[key] for r in rows]), 1)[0])

    fits = {key: slope(key) for key in ("dense_ms_per_step", "compressed_ms_per_step",
                                        "dense_mb", "compressed_mb")}
    # the local exponent between the two largest sizes (fixed per-step costs flatten the small end)
    for key in ("dense_ms_per_step", "compressed_ms_per_step"):
        fits[f"{key}_largest_two"] = float(np.log(rows[-1][key] / rows[-2][key])
                                           / np.log(ne[-1] / ne[-2]))
    for r in rows:
        print(f"\n{r['molecule']:8s} {r['natm']:4d} atoms {r['n_electrons']:4d} e naux "
              f"{r['naux']:5d}: dense {r['dense_ms_per_step']:.3f} ms/step "
              f"({r['dense_mb']:.1f} MB), compressed {r['compressed_ms_per_step']:.3f} ms/step "
              f"({r['compressed_mb']:.1f} MB)", end="")
    print(f"\nfitted exponents in electrons: time dense {fits['dense_ms_per_step']:.2f}, "
          f"compressed {fits['compressed_ms_per_step']:.2f} (target ≤ {TARGET_EXPONENT}; "
          f"between the two largest: dense {fits['dense_ms_per_step_largest_two']:.2f}, "
          f"compressed {fits['compressed_ms_per_step_largest_two']:.2f}); "
          f"memory dense {fits['dense_mb']:.2f}, compressed {fits['compressed_mb']:.2f}")
    benchmark.extra_info.update({"rows": rows, "exponents": fits,
                                 "target_exponent": TARGET_EXPONENT,
                                 "meets_target": fits["compressed_ms_per_step"]
                                 <= TARGET_EXPONENT})
    assert fits["dense_ms_per_step"] <= MAX_EXPONENT_GRID_FREE
    assert fits["compressed_ms_per_step"] <= MAX_EXPONENT_GRID_FREE

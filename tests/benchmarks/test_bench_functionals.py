"""Benchmark: energy + gradient of APBE kinetic + PBE XC for ethanol on a level-2 grid (issue 5).

Ethanol with the paper's density basis (6-31G(2df,p) → 454 even-tempered functions) on the PySCF
level-2 grid (≈ 66k points). Measured, in the same process:

* ``build_grid_bundle`` wall time and the bundle's size, dense (nsig = naux) and screened;
* one jitted ``value_and_grad`` of T_APBE + E_PBE (both terms in one pass), median of rounds, as
  wall time and as process CPU time (less sensitive to other jobs on a shared machine);
* two fixed references, interleaved round by round with the energy evaluations so that machine load
  hits all alike: a 1024×1024 float64 matmul (compute) and a jitted sum over a 256 MiB float64 array
  (memory bandwidth, the same XLA runtime and threads as the energy). The energy streams the
  ``ao`` array once and its gradient once more, so the floor is ``2 · ao.nbytes / bandwidth``; the
  report gives times, ratios to both references, and the ratio to that floor.

Goal (issue 5): 1000 solver steps ≤ 15 s on 2 cores ⇒ one energy+gradient ≲ 12 ms. The assertion is
a regression guard on the ratio to the bandwidth reference (see MAX_RATIO_TO_STREAM), and the ratio
``scripts/bench.sh`` compares with the baseline is the screened wall time over its stream floor
(the same bandwidth reference, timed in the same rounds), not the session's compute reference.

Measured (2-core EPYC VM shared with other jobs, load average ≈ 20, so wall times are inflated
~5-10×; CPU times and ratios are the meaningful numbers): 65,632 points; screened bundle 728 MB
(nsig 345 of 454, built in 18 s, peak RSS +1.1 GB), dense 957 MB; energy+gradient CPU time 121 ms
screened / 138 ms dense = 0.85 / 0.74 × the CPU time of two jitted sums over ``ao``. The step is
memory-bandwidth bound (``ao`` is read once for ρ, ∇ρ and once for the gradient; pointwise APBE+PBE
with its derivatives is ≈ 15 ms CPU of it). At the unloaded bandwidth of this machine (≈ 33 GB/s,
environment_notes §4) that is ≈ 45-50 ms per step, i.e. ≈ 50 s per 1000 steps: the 12 ms goal
needs ≤ ≈ 0.2 GB streamed per step. Tried and measured (same conditions, CPU time): a
``lax.scan`` over blocks with the gradient fused per block while it is in cache (custom_vjp; 1.7×
slower screened, 2.3× dense: XLA:CPU runs the small per-block dots single-threaded), ``lax.map``
over chunks of 4-16 blocks (7-14× slower: slice copies), a factored
values + lowered-angular-momentum layout (2.7× fewer bytes, but no faster: it needs small GEMMs with
5 columns, which XLA:CPU runs at a fraction of bandwidth), float32 storage of ``ao`` contracted
with float64 coefficients (6× slower: the mixed dot converts ``ao`` first), block sizes 32-512 (128
best). Float32 storage contracted in float32 — the explicit ``dtype="float32"`` option of
``build_grid_bundle`` — is measured here too, outside the timed round (so the baseline ratio keeps
its meaning): half the bytes, 0.75× the time (2026-11-26, idle machine: 53.5 vs 71.5 ms), ~3e-6 Ha.
Padding every block to the largest nsig costs 36 % here (mean significant 224 vs padded 357);
bucketing the blocks by their nsig (optimal partition of the sorted counts, one contraction per
bucket; /tmp prototype, 2026-11-26, idle machine) gave 2 / 3 / 4 / 6 buckets: 609 / 570 / 542 /
519 MB instead of 752 and 60.4 / 57.7 / 57.3 / 55.4 ms instead of 65.3 ms per energy+gradient
(−12 % at 4 buckets: the pointwise functional's ~13 ms does not shrink). Not adopted: it changes the GridBundle contract
and gives every molecule its own bucket shapes (more compilations in the padded pipelines).

Run: ``pytest -m benchmark -s tests/benchmarks/test_bench_functionals.py``.
"""

import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pyscf import gto

from mofdft_jax.functionals import grid_energy_terms
from mofdft_jax.qchem.basis import make_auxmol
from mofdft_jax.qchem.grids import build_grid_bundle, grid_bundle_nbytes

ETHANOL = """C -0.0007 -0.5406 0.0000
C 1.2296 0.3406 0.0000
O -1.1713 0.2591 0.0000
H -0.0227 -1.1866 0.8822
H -0.0227 -1.1866 -0.8822
H 2.1419 -0.2633 0.0000
H 1.2321 0.9836 0.8844
H 1.2321 0.9836 -0.8844
H -1.9415 -0.3121 0.0000"""
ROUNDS = 15
TARGET_STEP_MS = 12.0
#: Regression guard: energy+gradient CPU time / CPU time to stream ``ao`` twice (measured 0.74
#: dense, 0.85 screened: the step runs at the memory-bandwidth floor).
MAX_RATIO_TO_STREAM = 2.0


def apbe_pbe(coeffs, grid):
    terms = grid_energy_terms(coeffs, grid, kinetic="apbe", xc="pbe")
    return terms["kinetic"] + terms["xc"]


@pytest.mark.benchmark
def test_ethanol_apbe_pbe_energy_and_gradient(benchmark, record_ratio):
    mol = gto.M(atom=ETHANOL, basis="6-31G(2df,p)", verbose=0)
    auxmol = make_auxmol(mol)
    assert auxmol.nao_nr() == 454
    rss = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]
    grids, build_s = {}, {}
    for dense in (False, True):  # screened first: the peak-RSS growth after it is its own peak
        t0 = time.perf_counter()
        host = build_grid_bundle(mol, auxmol, level=2, dense=dense)
        build_s[dense] = time.perf_counter() - t0
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        grids[dense] = jax.tree.map(jnp.asarray, host)
        del host

    rng = np.random.default_rng(0)
    coeffs = jnp.asarray(rng.standard_normal(auxmol.nao_nr()) * 0.01)
    value_and_grad = jax.jit(jax.value_and_grad(apbe_pbe))
    for grid in grids.values():
        jax.block_until_ready(value_and_grad(coeffs, grid))
    e_dense, g_dense = value_and_grad(coeffs, grids[True])
    e_scr, g_scr = value_and_grad(coeffs, grids[False])
    assert abs(float(e_dense - e_scr)) < 1e-10 * abs(float(e_dense))

    a = rng.standard_normal((1024, 1024))
    stream = jnp.ones(2**25)
    stream_sum = jax.jit(jnp.sum)
    jax.block_until_ready(stream_sum(stream))
    keys = ("dense", "screened", "matmul", "stream", "screened_f64_again", "screened_f32")
    wall = {k: [] for k in keys}
    cpu = {k: [] for k in keys}

    def timed(key, fn):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall[key].append(time.perf_counter() - t)
        cpu[key].append(time.process_time() - c)

    def one_round():
        timed("dense", lambda: jax.block_until_ready(value_and_grad(coeffs, grids[True])))
        timed("screened", lambda: jax.block_until_ready(value_and_grad(coeffs, grids[False])))
        timed("matmul", lambda: a @ a)
        timed("stream", lambda: jax.block_until_ready(stream_sum(stream)))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)

    # the explicit float32 option, interleaved with float64 outside the timed round
    single = grids[False]._replace(ao=grids[False].ao.astype(jnp.float32))
    e_single, g_single = jax.block_until_ready(value_and_grad(coeffs, single))
    for _ in range(ROUNDS // 3):
        timed("screened_f64_again", lambda: jax.block_until_ready(
            value_and_grad(coeffs, grids[False])))
        timed("screened_f32", lambda: jax.block_until_ready(value_and_grad(coeffs, single)))
    med_wall = {k: float(np.median(v)) for k, v in wall.items()}
    med_cpu = {k: float(np.median(v)) for k, v in cpu.items()}
    report = {
        "npoints": int(np.count_nonzero(np.asarray(grids[True].weights))),
        "build_dense_s": build_s[True], "build_screened_s": build_s[False],
        "bundle_dense_mb": grid_bundle_nbytes(grids[True]) / 1e6,
        "bundle_screened_mb": grid_bundle_nbytes(grids[False]) / 1e6,
        "nsig_screened": int(grids[False].ao.shape[-1]),
        "build_screened_peak_rss_growth_mb": rss[1] - rss[0],
        "bandwidth_gb_s": stream.nbytes / med_wall["stream"] / 1e9,
        "matmul_ms": med_wall["matmul"] * 1e3,
    }
    ratios = []
    for key in ("dense", "screened"):
        nbytes = 2 * grids[key == "dense"].ao.nbytes
        floor_cpu = med_cpu["stream"] * nbytes / stream.nbytes
        report[f"{key}_ms"] = med_wall[key] * 1e3
        report[f"{key}_cpu_ms"] = med_cpu[key] * 1e3
        report[f"{key}_over_matmul"] = med_wall[key] / med_wall["matmul"]
        report[f"{key}_stream_floor_ms"] = med_wall["stream"] * nbytes / stream.nbytes * 1e3
        report[f"{key}_cpu_over_stream_floor"] = med_cpu[key] / floor_cpu
        report[f"{key}_1000_steps_s"] = med_wall[key] * 1000
        ratios.append(report[f"{key}_cpu_over_stream_floor"])
    report["screened_f32_ms"] = med_wall["screened_f32"] * 1e3
    report["f32_over_f64_time"] = med_wall["screened_f32"] / med_wall["screened_f64_again"]
    report["f32_energy_error_ha"] = float(e_single - e_scr)
    report["f32_grad_rel_error"] = float(jnp.linalg.norm(g_single - g_scr)
                                         / jnp.linalg.norm(g_scr))
    report["target_step_ms"] = TARGET_STEP_MS
    benchmark.extra_info.update(report)
    # The regression ratio is judged against this test's own bandwidth reference, not the session's
    # compute reference: the step is memory-bandwidth bound, and machines differ in their
    # compute/bandwidth balance (the CI machine of 2026-12-03 ran the compute reference 2.2x faster
    # than the baseline machine, this step only 1.4x faster: a false 1.5x "regression").
    record_ratio(benchmark, med_wall["screened"], report["screened_stream_floor_ms"] / 1e3,
                 reference_kind="stream floor: 2 x ao.nbytes at the in-run jitted-sum bandwidth")
    print("\n" + "\n".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}"
                           for k, v in report.items()))
    assert min(ratios) < MAX_RATIO_TO_STREAM
    assert abs(report["f32_energy_error_ha"]) < 1e-6 * abs(float(e_scr))

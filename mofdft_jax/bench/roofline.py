"""Roofline of the M-OFDFT step: the machine's limits and what the dominant kernels need.

A kernel that moves B bytes and does F floating-point operations cannot run faster than
t_roof = max(F / P, B / BW) on a machine with peak rate P and memory bandwidth BW. The machine
numbers are measured here (:func:`measure_machine`: a streaming triad and a large matrix–vector
product for BW, a float64 DGEMM for P; environment_notes §2, §4 measured ~33 GB/s and ~199 GFLOP/s
on the 2-core CI machine when it was idle); the kernel numbers come from XLA's own cost analysis of
the compiled kernel (``compiled.cost_analysis()``: flops and bytes accessed; the network's block
``lax.scan`` is unrolled for this, because XLA counts a loop body once: roofline rows measured
before this was done counted one of the network's L blocks), plus the size of the arrays the kernel
must stream (for the Hartree matrix–vector product: the whole operator, every step).

:func:`profile_step` times, for one molecule and one learned functional, the kernels of a solver
step (value and gradient): the Hartree term alone, the learned functional alone (network forward
and backward through the adapter, with the geometry features precomputed as in the solver), and
the whole energy; each beside its roofline estimate.
"""

from __future__ import annotations

import os
import time

import numpy as np

from mofdft_jax.bench.measure import load_average


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure_machine(size_mb: float = 256.0, repeats: int = 5, gemm_n: int = 2000) -> dict:
    """Memory bandwidth and float64 DGEMM rate of this machine (best of ``repeats``).

    * ``bandwidth_triad_gbs``: NumPy a ← b + s·c on three ``size_mb`` arrays (3 streams; the
      write-allocate read is not counted, as in STREAM);
    * ``bandwidth_matvec_gbs``: a jitted JAX float64 matrix–vector product of a ``size_mb``
      matrix (the access pattern of the dense Hartree term);
    * ``dgemm_gflops``: NumPy ``gemm_n``² matrix product, 2n³ flops.
    """
    import jax
    import jax.numpy as jnp

    n = int(size_mb * 1e6 / 8)
    b = np.random.default_rng(0).random(n)
    c = np.random.default_rng(1).random(n)
    a = np.empty_like(b)

    def triad():
        np.multiply(c, 3.0, out=a)
        np.add(a, b, out=a)

    # the two-pass triad moves 2 reads + 1 write + 1 read + 1 write = 5 streams
    bw_triad = 5 * n * 8 / _best_time(triad, repeats) / 1e9
    rows = int(np.sqrt(n))
    mat = jax.device_put(np.random.default_rng(2).random((rows, rows)))
    vec = jax.device_put(np.ones(rows))
    matvec = jax.jit(lambda m, v: m @ v)
    matvec(mat, vec).block_until_ready()
    bw_matvec = rows * rows * 8 / _best_time(lambda: matvec(mat, vec).block_until_ready(),
                                             repeats) / 1e9
    x = np.random.default_rng(3).random((gemm_n, gemm_n))
    gflops = 2 * gemm_n ** 3 / _best_time(lambda: x @ x, max(2, repeats // 2)) / 1e9
    del mat, a, b, c
    return {"bandwidth_triad_gbs": bw_triad, "bandwidth_matvec_gbs": bw_matvec,
            "dgemm_gflops": gflops, "cores": os.cpu_count(), "load": load_average(),
            "size_mb": size_mb, "gemm_n": gemm_n}


def roofline_time(flops: float, nbytes: float, peak_gflops: float, bandwidth_gbs: float) -> float:
    """max(F / P, B / BW) in seconds."""
    return max(flops / (peak_gflops * 1e9), nbytes / (bandwidth_gbs * 1e9))


def _cost(compiled) -> tuple[float, float]:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}
    return float(analysis.get("flops", 0.0)), float(analysis.get("bytes accessed", 0.0))


def _tree_nbytes(tree) -> int:
    import jax

    return int(sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(tree)))


def profile_step(functional, inputs, coeffs, machine: dict, *, repeats: int = 5) -> list[dict]:
    """Per-step time of the dominant kernels against their roofline (module docstring).

    Args:
      functional: the :class:`~mofdft_jax.model.functional.LearnedFunctional`.
      inputs: its :class:`~mofdft_jax.solver.learned.LearnedInputs` for the molecule.
      coeffs: ``(naux,)`` density coefficients to evaluate at.
      machine: :func:`measure_machine` output.

    Returns:
      One dict per kernel: ``kernel``, ``time_ms`` (best of ``repeats``), ``flops``,
      ``bytes`` (max of XLA's bytes accessed and the operands' size), ``roofline_ms``,
      ``ratio`` (measured / roofline), ``bound`` (memory or compute).
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from mofdft_jax.functionals import hartree_energy
    from mofdft_jax.model.graphormer import unrolled_blocks
    from mofdft_jax.solver.learned import make_learned_energy_fn

    params, static = eqx.partition(functional, eqx.is_array)
    terms_fn = make_learned_energy_fn(functional)

    def hartree(p, inp):
        return jax.value_and_grad(hartree_energy)(p, inp.bundle)

    def model(p, inp):
        fn = eqx.combine(inp.params, static)
        return jax.value_and_grad(lambda q: fn.energy(q, inp.bundle, inp.geometry,
                                                      features=inp.features))(p)

    def full(p, inp):
        return jax.value_and_grad(lambda q: sum(terms_fn(q, inp).values()))(p)

    peak = machine["dgemm_gflops"]
    bw = max(machine["bandwidth_matvec_gbs"], machine["bandwidth_triad_gbs"])
    p = jnp.asarray(coeffs)
    rows = []
    operands = {"hartree": _tree_nbytes(inputs.bundle.coulomb),
                "model": (_tree_nbytes(inputs.params) + _tree_nbytes(inputs.geometry)
                          + _tree_nbytes(inputs.features)),
                "full step": _tree_nbytes(inputs)}
    for name, fn in (("hartree", hartree), ("model", model), ("full step", full)):
        compiled = jax.jit(fn).lower(p, inputs).compile()
        # XLA counts a loop body once: cost the network with its block scan unrolled
        with unrolled_blocks():
            flops, accessed = _cost(jax.jit(lambda q, inp, fn=fn: fn(q, inp))
                                    .lower(p, inputs).compile())
        compiled(p, inputs)[1].block_until_ready()
        dt = _best_time(lambda: compiled(p, inputs)[1].block_until_ready(), repeats)
        nbytes = max(accessed, operands[name])
        roof = roofline_time(flops, nbytes, peak, bw)
        rows.append({"kernel": name, "time_ms": 1e3 * dt, "flops": flops, "bytes": nbytes,
                     "xla_bytes_accessed": accessed, "operand_bytes": operands[name],
                     "roofline_ms": 1e3 * roof, "ratio": dt / roof if roof > 0 else float("nan"),
                     "bound": "memory" if nbytes / (bw * 1e9) >= flops / (peak * 1e9)
                     else "compute", "load": load_average()})
    del params
    return rows

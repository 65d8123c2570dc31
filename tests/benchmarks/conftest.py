"""Shared machinery of the performance benchmarks: a fixed reference computation timed in the same
run, and ratios to it.

Shared machines are noisy (the CI machine has 2 cores and several jobs at once), so a benchmark is
judged by ``ratio = time / reference``, where the reference is a FIXED computation timed in the same
process right before the benchmark: a float64 NumPy matrix product (BLAS, compute-bound) plus a
small jitted JAX kernel (value and gradient of an MLP-like function, XLA:CPU) — the two kinds of
work the package does. Load on the machine slows both alike, so the ratio is far steadier than the
time.

* fixture ``reference_s``: the reference's median time (seconds) measured just before the test;
* fixture ``record_ratio`` (the function :func:`store_ratio`): stores ``seconds``,
  ``reference_s`` and ``ratio`` in the benchmark's ``extra_info`` (``scripts/bench.sh`` compares
  ``ratio`` with ``results/bench/baseline.json``);
* the session's reference (measured at start) is written to the pytest-benchmark JSON as
  ``reference_s``, so benchmarks that do not call :func:`record_ratio` are judged by
  ``median time / reference_s``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

#: Size of the reference matrix product (float64, 2·n³ flops ≈ 0.43 GFLOP).
REFERENCE_GEMM_N = 600
#: Repetitions of the reference per measurement (median taken).
REFERENCE_REPEATS = 5

_STATE: dict = {}


def _jax_kernel():
    import jax
    import jax.numpy as jnp

    if "jax_kernel" not in _STATE:
        def loss(w, x):
            h = jnp.tanh(x @ w)
            return jnp.sum(h * h) + jnp.sum(jnp.sin(h @ w.T))

        _STATE["jax_kernel"] = jax.jit(jax.value_and_grad(loss))
        rng = np.random.default_rng(0)
        _STATE["jax_args"] = (jnp.asarray(rng.normal(size=(256, 256)) / 16.0),
                              jnp.asarray(rng.normal(size=(512, 256))))
        fn, args = _STATE["jax_kernel"], _STATE["jax_args"]
        fn(*args)[1].block_until_ready()  # compile outside the timing
    return _STATE["jax_kernel"], _STATE["jax_args"]


def measure_reference(repeats: int = REFERENCE_REPEATS) -> float:
    """Median seconds of the fixed reference computation (module docstring)."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(REFERENCE_GEMM_N, REFERENCE_GEMM_N))
    b = rng.normal(size=(REFERENCE_GEMM_N, REFERENCE_GEMM_N))
    fn, args = _jax_kernel()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(4):
            (a @ b).sum()
        for _ in range(8):
            fn(*args)[1].block_until_ready()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


@pytest.fixture(scope="session")
def session_reference_s() -> float:
    """The reference measured once per session (also written to the benchmark JSON)."""
    if "session" not in _STATE:
        _STATE["session"] = measure_reference()
    return _STATE["session"]


@pytest.fixture
def reference_s(session_reference_s) -> float:
    """The reference measured right before this test (seconds)."""
    return measure_reference()


def store_ratio(benchmark, seconds: float, reference_s: float, **extra) -> float:
    """Store ``seconds``, ``reference_s`` and ``ratio = seconds / reference_s`` (plus ``extra``)
    in ``benchmark.extra_info``; returns the ratio."""
    ratio = float(seconds) / float(reference_s)
    benchmark.extra_info.update({"seconds": float(seconds), "reference_s": float(reference_s),
                                 "ratio": ratio, **extra})
    return ratio


@pytest.fixture
def record_ratio():
    """:func:`store_ratio` as a fixture:
    ``record_ratio(benchmark, seconds, reference_s, **extra)``."""
    return store_ratio


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Add the session's reference time (and the load average) to the benchmark JSON."""
    import os

    if "session" not in _STATE:
        _STATE["session"] = measure_reference()
    output_json["reference_s"] = _STATE["session"]
    output_json["reference"] = (f"{REFERENCE_GEMM_N}x{REFERENCE_GEMM_N} float64 matmul x4 + "
                                "jitted 512x256 MLP value_and_grad x8 (median of "
                                f"{REFERENCE_REPEATS})")
    try:
        output_json["load_average"] = os.getloadavg()[0]
    except OSError:
        pass

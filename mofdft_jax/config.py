"""Numerical configuration: float64 policy.

M-OFDFT energies are differences of numbers of size 10^2-10^4 Ha that must agree to 10^-4 Ha, so all
integrals, functionals, energies and the density optimiser run in float64. JAX defaults to float32;
this module is the one place that switches it. Library modules never call it at import time: entry
points (the ``mofdft`` CLI, tests' ``conftest.py``, the reproduction drivers) call
:func:`enable_x64`, and the drivers of the device world call :func:`ensure_x64`, which fails loudly
instead of silently computing in float32.
"""

from __future__ import annotations

import jax


class Float64DisabledError(RuntimeError):
    """Raised when a float64 driver is called while JAX runs in float32."""


def enable_x64() -> None:
    """Turn on 64-bit floats in JAX (``jax_enable_x64``); call once, before arrays are created."""
    jax.config.update("jax_enable_x64", True)


def ensure_x64() -> None:
    """Raise :class:`Float64DisabledError` unless JAX computes in float64."""
    if not jax.config.read("jax_enable_x64"):
        raise Float64DisabledError(
            "mofdft_jax needs 64-bit JAX: call mofdft_jax.enable_x64() before creating arrays, "
            "or set JAX_ENABLE_X64=1 in the environment"
        )


def enable_compilation_cache(path, min_compile_time_s: float = 0.5) -> None:
    """Keep XLA executables on disk under ``path`` (JAX's persistent compilation cache).

    Processes that solve molecules of the same shapes (the experiments of ``mofdft reproduce``,
    each in its own process; a rerun of a preset) then load instead of recompiling. Only
    compilations longer than ``min_compile_time_s`` are stored. The cache is keyed by the program,
    the JAX/XLA version and the device, so a stale entry is never used.
    """
    from pathlib import Path

    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))

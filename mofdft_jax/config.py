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


#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Let glibc reuse freed large blocks instead of returning them to the kernel.

    By default glibc serves every allocation above 32 MB with a fresh ``mmap`` and unmaps it on
    free, so each new grid (hundreds of MB of basis values, allocated by NumPy and again by XLA)
    is paid in page faults, which are slow on virtual machines (measured ~12 µs per 4 kB page on
    the 2-core VM: 1.1 s to first-touch 370 MB). With ``mmap`` off and heap trimming off, later
    arrays reuse the pages of earlier ones: the quick preset's pes_geometry took 120 s instead of
    145 s. The price is that the process keeps its peak memory until it exits, so this is meant
    for short-lived driver processes (``mofdft reproduce`` runs each experiment in its own).

    Returns:
      Whether the settings were applied (``False`` off glibc).
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        return False
    return bool(ok)

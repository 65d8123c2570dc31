"""Test configuration: float64 JAX for every test (as every entry point does), quiet PySCF."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mofdft_jax import enable_x64  # noqa: E402

enable_x64()


@pytest.fixture
def rng():
    """A seeded NumPy generator: tests never draw unseeded random numbers."""
    return np.random.default_rng(20240210)

"""Smoke test of the scientific stack inside the mofdft_jax image (run by container_check.sh).

Imports every heavy dependency (catches a shared library missing from the slim base image) and
runs three tiny computations whose answers are known:

* JAX is in float64 without being told (the image sets ``JAX_ENABLE_X64=1``) and ``jax.grad`` of
  sum(x^2) is 2x;
* PySCF restricted Hartree-Fock of H2 in STO-3G at R = 1.4 bohr gives E = -1.1167 Ha
  (Szabo & Ostlund, Modern Quantum Chemistry, section 3.5.2);
* RDKit builds ethanol with hydrogens (9 atoms); h5py writes and reads back an array;
* CUDA 12 image only (jax-cuda12-plugin installed): the CUDA libraries gpu4pyscf looks up by name
  are in the linker cache, and ``import gpu4pyscf`` gets as far as CuPy's device query. With a GPU
  (JAX backend ``gpu``) it also runs the H2 RHF above on the GPU (``mf.to_gpu()``); without one the
  CUDA driver error of that query is the expected end, any other error (a library that does not
  load) is a failure.

``--expect-backend gpu`` (container_check.sh --gpus) fails the run when JAX fell back to the CPU.

Writes one JSON object to ``--out`` (inside the mounted results folder) and exits non-zero on any
failed check.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

H2_RHF_STO3G_HARTREE = -1.1167  # Szabo & Ostlund, R = 1.4 bohr
H2_TOLERANCE_HARTREE = 5e-4


CUDA_DISTRIBUTIONS = ("jax-cuda12-plugin", "jax-cuda12-pjrt", "cupy-cuda12x", "gpu4pyscf-cuda12x",
                      "nvidia-cusolver-cu12", "nvidia-cublas-cu12", "nvidia-cudnn-cu12")


def cuda_checks(jax_backend: str, failures: list[str]) -> dict | None:
    """The CUDA 12 image's GPU stack; None in the CPU image (no jax-cuda12-plugin)."""
    import ctypes.util
    from importlib import metadata

    try:
        metadata.version("jax-cuda12-plugin")
    except metadata.PackageNotFoundError:
        return None
    out: dict = {"wheels": {}}
    for dist in CUDA_DISTRIBUTIONS:
        try:
            out["wheels"][dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            failures.append(f"CUDA image without {dist}")
    # gpu4pyscf.lib.cusolver: ctypes.util.find_library("cusolver"), i.e. the linker cache
    out["find_library_cusolver"] = ctypes.util.find_library("cusolver")
    if out["find_library_cusolver"] is None:
        failures.append("libcusolver is not in the linker cache: `import gpu4pyscf` cannot load it")
    try:
        import gpu4pyscf
    except Exception as exc:  # noqa: BLE001 - which error it is decides
        out["gpu4pyscf_import"] = f"{type(exc).__name__}: {exc}"
        if jax_backend == "gpu" or type(exc).__name__ != "CUDARuntimeError":
            failures.append(f"import gpu4pyscf failed: {type(exc).__name__}: {exc}")
        return out
    out["gpu4pyscf_import"] = f"ok ({gpu4pyscf.__version__})"
    if jax_backend == "gpu":
        from pyscf import gto, scf

        mol = gto.M(atom="H 0 0 0; H 0 0 1.4", unit="Bohr", basis="sto-3g", verbose=0)
        mf = scf.RHF(mol).to_gpu()
        energy = float(mf.kernel())
        out["h2_rhf_sto3g_gpu_hartree"] = energy
        if not mf.converged or abs(energy - H2_RHF_STO3G_HARTREE) > H2_TOLERANCE_HARTREE:
            failures.append(f"gpu4pyscf H2 RHF/STO-3G energy {energy:.6f} Ha "
                            f"(converged={mf.converged}), expected {H2_RHF_STO3G_HARTREE}")
    return out


def run_checks(expect_backend: str | None = None) -> dict:
    """Run the checks; return a dict of measured values and a list of failures."""
    failures: list[str] = []
    out: dict = {}
    t0 = time.perf_counter()

    import jax
    import jax.numpy as jnp

    x = jnp.arange(3.0)
    grad = jax.grad(lambda v: jnp.sum(v**2))(x)
    out["jax_version"] = jax.__version__
    out["jax_backend"] = jax.default_backend()
    out["jax_dtype"] = str(x.dtype)
    if x.dtype != jnp.float64:
        failures.append(f"JAX default float dtype is {x.dtype}, expected float64")
    if not bool(jnp.allclose(grad, 2.0 * x)):
        failures.append(f"jax.grad(sum(x^2)) = {grad}, expected 2x")
    if expect_backend is not None and out["jax_backend"] != expect_backend:
        failures.append(f"JAX backend is {out['jax_backend']}, expected {expect_backend}")

    import pyscf
    from pyscf import gto, scf

    mol = gto.M(atom="H 0 0 0; H 0 0 1.4", unit="Bohr", basis="sto-3g", verbose=0)
    mf = scf.RHF(mol)
    energy = float(mf.kernel())
    out["pyscf_version"] = pyscf.__version__
    out["h2_rhf_sto3g_hartree"] = energy
    if not mf.converged or abs(energy - H2_RHF_STO3G_HARTREE) > H2_TOLERANCE_HARTREE:
        failures.append(f"H2 RHF/STO-3G energy {energy:.6f} Ha (converged={mf.converged}), "
                        f"expected {H2_RHF_STO3G_HARTREE} +- {H2_TOLERANCE_HARTREE}")

    from rdkit import Chem

    ethanol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    out["ethanol_atoms"] = ethanol.GetNumAtoms()
    if ethanol.GetNumAtoms() != 9:
        failures.append(f"RDKit ethanol with H has {ethanol.GetNumAtoms()} atoms, expected 9")

    import h5py
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.h5"
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(5.0)
        with h5py.File(path, "r") as f:
            if not np.array_equal(f["x"][()], np.arange(5.0)):
                failures.append("h5py round trip changed the data")

    # import-only: the rest of the runtime stack (shared libraries present, versions consistent)
    import dask.distributed  # noqa: F401
    import equinox  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import openmm  # noqa: F401
    import optax  # noqa: F401
    import pandas  # noqa: F401
    import pdbfixer  # noqa: F401
    import scipy.linalg  # noqa: F401

    out["cuda"] = cuda_checks(out["jax_backend"], failures)

    import mofdft_jax

    out["mofdft_jax_version"] = mofdft_jax.__version__
    out["wall_s"] = time.perf_counter() - t0
    out["failures"] = failures
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--expect-backend", choices=("cpu", "gpu"), default=None,
                        help="fail unless JAX's default backend is this one")
    args = parser.parse_args()
    result = run_checks(args.expect_backend)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for failure in result["failures"]:
        print(f"smoke check failed: {failure}", file=sys.stderr)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

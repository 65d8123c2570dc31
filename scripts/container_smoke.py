"""Smoke test of the scientific stack inside the mofdft_jax image (run by container_check.sh).

Imports every heavy dependency (catches a shared library missing from the slim base image) and
runs three tiny computations whose answers are known:

* JAX is in float64 without being told (the image sets ``JAX_ENABLE_X64=1``) and ``jax.grad`` of
  sum(x^2) is 2x;
* PySCF restricted Hartree-Fock of H2 in STO-3G at R = 1.4 bohr gives E = -1.1167 Ha
  (Szabo & Ostlund, Modern Quantum Chemistry, section 3.5.2);
* RDKit builds ethanol with hydrogens (9 atoms); h5py writes and reads back an array.

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


def run_checks() -> dict:
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

    import mofdft_jax

    out["mofdft_jax_version"] = mofdft_jax.__version__
    out["wall_s"] = time.perf_counter() - t0
    out["failures"] = failures
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args()
    result = run_checks()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for failure in result["failures"]:
        print(f"smoke check failed: {failure}", file=sys.stderr)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark worker: ``python -m mofdft_jax.bench.worker JOB_JSON`` runs one job, prints one line
``BENCH_RESULT {json}`` (see :func:`mofdft_jax.bench.measure.run_isolated`).

Jobs (``kind``):

``ks``
    PySCF restricted KS-DFT at the paper's settings (spec §1.1: PBE/6-31G(2df,p), grid level 2,
    1 meV, density fitting with def2-universal-jfit above 30 atoms; ``settings`` overrides
    fields), from building the molecule's basis to convergence. Keys: ``system`` (a cached xyz
    path or a system spec), ``settings`` (dict, optional).
``ofdft``
    :func:`mofdft_jax.bench.ofdft.run_ofdft`. Keys: ``system``, ``functional``, ``steps``, ``lr``,
    ``mode``, ``radius``, ``coulomb_tol``, ``with_forces``.
``roofline``
    :func:`mofdft_jax.bench.roofline.measure_machine` (memory bandwidth and DGEMM rate).
"""

from __future__ import annotations

import json
import sys

from mofdft_jax.bench.measure import RESULT_PREFIX, Timer, load_average, peak_rss_mb


def _molecule(system: str):
    from mofdft_jax.bench.systems import build_system

    if system.endswith(".xyz") and not system.startswith("file:"):
        system = f"file:{system}"
    return build_system(system)


def run_ks_job(job: dict) -> dict:
    """A PySCF KS-DFT run at the paper's settings (module docstring)."""
    from mofdft_jax.qchem.basis import make_mol
    from mofdft_jax.qchem.ksdft import make_ks
    from mofdft_jax.qchem.settings import PAPER_SETTINGS

    settings = PAPER_SETTINGS.replace(**job.get("settings", {}))
    molecule = _molecule(job["system"])
    load = load_average()
    with Timer() as t:
        mol = make_mol(molecule, settings.basis, max_memory_mb=settings.max_memory_mb)
        mf = make_ks(mol, settings)
        mf.verbose = 0
        cycles = []
        mf.callback = lambda env: cycles.append(env.get("cycle"))
        mf.kernel()
    return {"molecule": molecule.name, "n_atoms": int(mol.natm), "n_electrons": int(mol.nelectron),
            "nao": int(mol.nao_nr()), "density_fit": bool(settings.uses_density_fit(mol.natm)),
            "basis": settings.basis, "xc": settings.xc, "grid_level": settings.grid_level,
            "converged": bool(mf.converged), "scf_cycles": len(cycles),
            "energy_ha": float(mf.e_tot), "wall_s": t.wall_s, "cpu_s": t.cpu_s,
            "peak_rss_mb": peak_rss_mb(), "load_start": load, "load_end": load_average()}


def run_job(job: dict) -> dict:
    """Dispatch one job description."""
    from mofdft_jax.config import enable_x64

    enable_x64()
    kind = job["kind"]
    if kind == "ks":
        return run_ks_job(job)
    if kind == "ofdft":
        from mofdft_jax.bench.ofdft import run_ofdft

        keys = ("steps", "lr", "mode", "radius", "coulomb_tol", "with_forces", "basis",
                "apply_delta", "profile", "grid_level")
        options = {k: job[k] for k in keys if k in job}
        return run_ofdft(_molecule(job["system"]), job.get("functional", "fresh:small:txc"),
                         **options)
    if kind == "roofline":
        from mofdft_jax.bench.roofline import measure_machine

        return measure_machine(**job.get("options", {}))
    raise ValueError(f"unknown benchmark job kind {kind!r}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(argv[0])
    result = run_job(job)
    print(RESULT_PREFIX + json.dumps({"kind": job["kind"], **result}, default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

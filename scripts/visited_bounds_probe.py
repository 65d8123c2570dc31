"""Probe of issue 19 (docs/landscape.md §6): the label-free bounds along minimisations of a learned
checkpoint on the *test* conformers of a labelled dataset, which ``mofdft sample-visited`` refuses
to sample (they stay unseen by training; this script only measures).

For each of the first N test conformers: precond-lbfgs from ProjMINAO (≤ 300 steps, |P∇E| ≤ 1e-4),
the same path and kept steps as ``mofdft sample-visited``, then per kept state the energy error,
the Coulomb distance to p* and the hinge violations of the three bounds (kcal/mol).

usage: python scripts/visited_bounds_probe.py CHECKPOINT DATASET N OUT.json
"""

import json
import sys

import numpy as np

import mofdft_jax

mofdft_jax.enable_x64()

from mofdft_jax.commands.learned_solve import (load_functional, prepare_learned_molecule,  # noqa: E402
                                               solve_molecule_learned)
from mofdft_jax.data.loader import open_dataset  # noqa: E402
from mofdft_jax.data.splits import make_splits  # noqa: E402
from mofdft_jax.workflows.visited import (select_visited_steps, visited_samples,  # noqa: E402
                                          visited_violations)


def probe_bounds(checkpoint: str, data: str, n: int) -> list[dict]:
    """One row per kept state of the minimisations of the first ``n`` test conformers."""
    functional, info = load_functional(checkpoint)
    dataset = open_dataset(data)
    settings = dataset.label_settings
    xc = str(settings.get("xc", "pbe")).lower()
    basis, grid_level = settings["basis"], int(settings["grid_level"])
    rows = []
    for file in make_splits(dataset)["test"][:n]:
        labels = dataset.read(file)
        setup = prepare_learned_molecule(labels.molecule, functional, basis=basis,
                                         grid_level=grid_level, xc=xc, init="projminao",
                                         with_forces=False, with_metric=True)
        _, result = solve_molecule_learned(labels.molecule, functional, info, init="projminao",
                                           steps=300, xc=xc, basis=basis, grid_level=grid_level,
                                           optimizer="precond-lbfgs", gtol=1e-4,
                                           store_coeffs=True, setup=setup)
        trajectory = np.asarray(result.trajectory.coeffs)
        samples = visited_samples(functional, xc, setup.inputs, trajectory,
                                  select_visited_steps(trajectory.shape[0], 10),
                                  coeffs_star=labels.p_ref,
                                  energy_ks=float(labels.ks_energy["e_tot"]),
                                  coulomb=np.asarray(setup.bundle.coulomb))
        violations = visited_violations(functional, xc, setup.inputs, samples,
                                        coeffs_star=labels.p_ref)
        for step, error, distance, (var, desc, conv) in zip(
                samples.steps, samples.energy_error_kcal, samples.distance, violations):
            rows.append({"file": file, "step": int(step), "e_err_kcal": float(error),
                         "dist": float(distance), "var": float(var), "desc": float(desc),
                         "conv": float(conv)})
            print(json.dumps(rows[-1]), flush=True)
        print(file, result.status, result.n_steps, flush=True)
    return rows


if __name__ == "__main__":
    checkpoint, data, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(out, "w") as fh:
        json.dump(probe_bounds(checkpoint, data, n), fh, indent=1)

"""Synthetic MoleculeLabels with the right shapes and random values (format and loader tests)."""

from __future__ import annotations

import numpy as np

from mofdft_jax.molecules import Molecule
from mofdft_jax.model.functional import TARGETS
from mofdft_jax.qchem.labels import ENERGY_KEYS, TEST_SETTINGS, MoleculeLabels


def synthetic_labels(rng, n_steps=4, naux=7, name="water", wall_s=1.25) -> MoleculeLabels:
    """MoleculeLabels filled with random numbers of the right shapes (format tests only)."""
    mol = Molecule.from_angstrom([8, 1, 1], [[0, 0, 0.1173], [0, 0.7572, -0.4692],
                                             [0, -0.7572, -0.4692]], name=name)
    return MoleculeLabels(
        molecule=mol,
        settings={**TEST_SETTINGS.to_dict(), "pyscf_version": "2.14.0"},
        n_steps=n_steps,
        coeffs=rng.normal(size=(n_steps, naux)),
        ts=rng.normal(size=n_steps),
        ts_grad=rng.normal(size=(n_steps, naux)),
        targets={k: rng.normal(size=n_steps) for k in TARGETS},
        target_grads={k: rng.normal(size=(n_steps, naux)) for k in TARGETS},
        step_energies={k: rng.normal(size=n_steps) for k in ENERGY_KEYS},
        p_ref=rng.normal(size=naux),
        ks_energy={k: float(rng.normal()) for k in ENERGY_KEYS},
        hf_forces_ref=rng.normal(size=(3, 3)),
        init_coeffs={"minao": rng.normal(size=naux), "huckel": rng.normal(size=naux)},
        converged=True,
        wall_s=wall_s,
    )

"""Device layer: OFDFT density optimisation (spec §4).

* :func:`make_energy_fn` — the energy as a composition of terms ``term(coeffs, bundle) -> Ha``;
* :func:`solve` — projected gradient descent under wᵀp = N with the paper's reporting rules and a
  true convergence criterion, returning a :class:`SolveResult`;
* :func:`hf_forces` — Hellmann–Feynman plus nuclear-repulsion forces of a fitted density.

Initial guesses need PySCF and live on the host side, in :mod:`mofdft_jax.qchem.guesses`.
"""

from mofdft_jax.solver.energy import TERM_NAMES, make_energy_fn, sum_terms
from mofdft_jax.solver.forces import hf_forces, nuclear_repulsion_forces
from mofdft_jax.solver.optimize import (
    DEFAULT_GTOL,
    DEFAULT_LR,
    DEFAULT_STEPS,
    STATUS_CONVERGED,
    STATUS_DIVERGED,
    STATUS_MAX_STEPS,
    SolveResult,
    SolveTrajectory,
    StepChoice,
    choose_steps,
    progress_handler,
    project_gradient,
    project_onto_plane,
    solve,
)

__all__ = [
    "DEFAULT_GTOL", "DEFAULT_LR", "DEFAULT_STEPS", "STATUS_CONVERGED", "STATUS_DIVERGED",
    "STATUS_MAX_STEPS", "SolveResult", "SolveTrajectory", "StepChoice", "TERM_NAMES",
    "choose_steps", "hf_forces", "make_energy_fn", "nuclear_repulsion_forces", "progress_handler",
    "project_gradient", "project_onto_plane", "solve", "sum_terms",
]

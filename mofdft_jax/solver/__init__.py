"""Device layer: OFDFT density optimisation (spec §4).

* :func:`make_energy_fn` — the energy as a composition of terms ``term(coeffs, bundle) -> Ha``;
* :func:`solve` — density optimisation under wᵀp = N with a projected optax optimiser (registry
  :data:`OPTIMIZERS`: the paper's ``sgd``, ``momentum``, ``precond``, ``lbfgs``,
  ``precond-lbfgs``), the paper's reporting rules and a true convergence criterion (optionally
  the stopping rule), returning a :class:`SolveResult`;
* :func:`hf_forces` — Hellmann–Feynman plus nuclear-repulsion forces of a fitted density.

Initial guesses need PySCF and live on the host side, in :mod:`mofdft_jax.qchem.guesses`.
"""

from mofdft_jax.solver.energy import (TERM_NAMES, integrated_negative_density, make_energy_fn,
                                     sum_terms)
from mofdft_jax.solver.forces import hf_forces, nuclear_repulsion_forces
from mofdft_jax.solver.optimize import (
    DEFAULT_GTOL,
    DEFAULT_LR,
    DEFAULT_NEGATIVE_DENSITY_TOL,
    DEFAULT_OPTIMIZER,
    DEFAULT_STEPS,
    STATUS_CONVERGED,
    STATUS_DIVERGED,
    STATUS_MAX_STEPS,
    SolveResult,
    SolveTrajectory,
    StepChoice,
    WARNING_NEGATIVE_DENSITY,
    choose_steps,
    measure_negative_density,
    progress_handler,
    project_gradient,
    project_onto_plane,
    resolve_solver_defaults,
    solve,
)
from mofdft_jax.solver.optimizers import OPTIMIZERS, get_optimizer, make_metric

__all__ = [
    "DEFAULT_GTOL", "DEFAULT_LR", "DEFAULT_NEGATIVE_DENSITY_TOL", "DEFAULT_OPTIMIZER",
    "DEFAULT_STEPS", "OPTIMIZERS", "STATUS_CONVERGED", "STATUS_DIVERGED", "STATUS_MAX_STEPS",
    "SolveResult", "SolveTrajectory", "StepChoice", "TERM_NAMES", "WARNING_NEGATIVE_DENSITY",
    "choose_steps", "get_optimizer", "hf_forces", "integrated_negative_density",
    "make_energy_fn", "make_metric", "measure_negative_density", "nuclear_repulsion_forces",
    "progress_handler", "project_gradient", "project_onto_plane", "resolve_solver_defaults",
    "solve", "sum_terms",
]

"""Adaptive sampling of the densities a minimisation with a learned functional visits (issue 19).

The value and gradient labels of the SCF steps fix a learned energy on the SCF path only; a
minimisation leaves that path along the directions the labels never see and settles in a spurious
valley (docs/landscape.md). Labels at the visited densities would need a KS calculation each, but
three inequalities hold for the exact functional at *any* density p_v of a molecule whose KS density
is p* and KS energy E_KS (:class:`mofdft_jax.train.losses.VisitedBounds`): the variational
principle E(p_v) ≥ E(p*), a descent direction −∇E(p_v) pointing toward p*, and the convexity of T_S.
Their constants need only θ-independent terms at p_v and p*, so the solver's own visits become
training rows with a hinge loss (after the surrogate-functional scheme of arXiv 2604.20458: sample
where the current model goes, train, resample).

* :func:`select_visited_steps` — which states of a trajectory to keep (geometric in the step, plus
  the last: the start, the departure from the SCF path and the valley);
* :func:`visited_samples` — the bounds and diagnostics of the kept states of one trajectory
  (device world: jitted value-and-Jacobian of the energy split [T_θ, E_rest, T_base]).

The driver (files, PySCF) is ``mofdft sample-visited`` (:mod:`mofdft_jax.commands.sample_visited`).
"""

from __future__ import annotations

import numpy as np

_SPLIT_FNS: dict = {}


def select_visited_steps(n_states: int, keep: int) -> np.ndarray:
    """At most ``keep`` state indices of a trajectory of ``n_states`` states: 0, 1, 2, 4, 8, … and
    the last one (the geometric spacing follows the minimisation's own time scale)."""
    if n_states <= 0 or keep <= 0:
        return np.zeros(0, dtype=np.int64)
    geometric = [0] + [2 ** k for k in range(64) if 2 ** k < n_states - 1]
    return np.asarray(sorted(set(geometric[:keep - 1]) | {n_states - 1}), dtype=np.int64)


def energy_split_fn(functional, xc: str):
    """Jitted ``(coeffs, inputs) -> ((3,), (3, naux))``: the values and gradients (Ha) of
    [T_θ, E_rest, T_base] of the solver's energy for ``functional`` (one compiled function per
    functional and XC in this process).

    E_rest = E_total − T_θ (T_APBE + Hartree + XC + external + nuclear for ``ts_res``) and T_base
    the kinetic part of E_rest (T_APBE for ``ts_res``; 0 for the other targets, whose learned term
    is not a kinetic energy on its own).
    """
    import jax
    import jax.numpy as jnp

    from mofdft_jax.commands.learned_solve import learned_energy_fn
    from mofdft_jax.solver.energy import sum_terms

    key = (id(functional), xc)
    if key not in _SPLIT_FNS:
        energy_terms_fn = learned_energy_fn(functional, xc)
        is_ts_res = functional.target == "ts_res"

        def split(coeffs, inputs):
            import equinox as eqx

            from mofdft_jax.solver.learned import split_learned_functional

            _, static = split_learned_functional(functional)
            model = eqx.combine(inputs.params, static).energy(
                coeffs, inputs.bundle, inputs.geometry, features=inputs.features)
            terms = energy_terms_fn(coeffs, inputs)
            base = terms["kinetic"] - model if is_ts_res else jnp.zeros_like(model)
            return jnp.stack([model, sum_terms(terms) - model, base])

        def value_and_jacobian(coeffs, inputs):
            return split(coeffs, inputs), jax.jacrev(split)(coeffs, inputs)

        _SPLIT_FNS[key] = (functional, jax.jit(value_and_jacobian))
    return _SPLIT_FNS[key][1]


def visited_samples(functional, xc: str, inputs, trajectory_coeffs, steps, *, coeffs_star,
                    energy_ks: float, coulomb):
    """:class:`~mofdft_jax.data.visited.VisitedSamples` of the states ``steps`` of a trajectory.

    T* = E_KS − E_rest(p*) is the learned term's value that makes the model exact at p*, so the
    variational bound reads T_θ(p_v) ≥ E_KS − E_rest(p_v). For targets other than ``ts_res`` the
    convexity bound does not apply (T_θ is not T_S) and its constant is NaN (skipped by the loss).

    Args:
      functional, xc: the learned functional and the XC functional of its labels.
      inputs: the molecule's ``LearnedInputs``.
      trajectory_coeffs: ``(n_states, naux)`` coefficients of the minimisation.
      steps: indices of the kept states.
      coeffs_star: ``(naux,)`` KS density p*; energy_ks: E_KS (Ha).
      coulomb: ``(naux, naux)`` W̃ for the distance diagnostic.
    """
    import jax.numpy as jnp

    from mofdft_jax.data.visited import VisitedSamples
    from mofdft_jax.train.losses import make_visited_bounds
    from mofdft_jax.units import HARTREE_TO_KCAL
    from mofdft_jax.workflows.landscape import coulomb_distance

    fn = energy_split_fn(functional, xc)
    p_star = np.asarray(coeffs_star, dtype=np.float64)
    v_star, _ = fn(jnp.asarray(p_star), inputs)
    v_star = np.asarray(v_star)
    label_star = energy_ks - v_star[1]
    coeffs, bounds, errors, distances = [], [], [], []
    for step in np.asarray(steps, dtype=np.int64):
        p = np.asarray(trajectory_coeffs[int(step)], dtype=np.float64)
        value, jac = (np.asarray(x) for x in fn(jnp.asarray(p), inputs))
        b = make_visited_bounds(label_star=label_star, rest_star=v_star[1], rest_visited=value[1],
                                grad_rest_visited=jac[1], base_star=v_star[2],
                                base_visited=value[2], grad_base_visited=jac[2],
                                coeffs_visited=p, coeffs_star=p_star)
        row = [float(b.variational), float(b.descent), float(b.convexity)]
        if functional.target != "ts_res":
            row[2] = float("nan")
        coeffs.append(p)
        bounds.append(row)
        errors.append((value[0] + value[1] - energy_ks) * HARTREE_TO_KCAL)
        distances.append(coulomb_distance(p, p_star, coulomb))
    return VisitedSamples(coeffs=np.asarray(coeffs).reshape(-1, p_star.size),
                          bounds=np.asarray(bounds).reshape(-1, 3),
                          steps=np.asarray(steps, dtype=np.int64),
                          energy_error_kcal=np.asarray(errors), distance=np.asarray(distances))


def visited_violations(functional, xc: str, inputs, samples, *, coeffs_star) -> np.ndarray:
    """``(n, 3)`` kcal/mol: the hinge violations [variational, descent, convexity] of
    ``samples``' bounds by ``functional`` (any model, not only the one that was sampled), as the
    training loss sees them (:func:`~mofdft_jax.train.losses.applicable_bound_violations` of T_θ(p_v)
    and ∇T_θ(p_v)ᵀ(p_v − p*)); NaN bounds (not applicable) give 0.

    Args:
      functional, xc: the learned functional to evaluate and the XC functional of its labels.
      inputs: the molecule's ``LearnedInputs`` for ``functional``.
      samples: :class:`~mofdft_jax.data.visited.VisitedSamples` of this molecule.
      coeffs_star: ``(naux,)`` KS density p*.
    """
    import jax.numpy as jnp

    from mofdft_jax.train.losses import applicable_bound_violations
    from mofdft_jax.units import HARTREE_TO_KCAL

    fn = energy_split_fn(functional, xc)
    p_star = np.asarray(coeffs_star, dtype=np.float64)
    rows = []
    for p, constants in zip(np.asarray(samples.coeffs), np.asarray(samples.bounds)):
        value, jac = (np.asarray(x) for x in fn(jnp.asarray(p), inputs))
        rows.append(np.asarray(applicable_bound_violations(
            HARTREE_TO_KCAL * value[0], HARTREE_TO_KCAL * float(jac[0] @ (p - p_star)),
            jnp.asarray(constants))))
    return np.asarray(rows).reshape(-1, 3)


__all__ = ["energy_split_fn", "select_visited_steps", "visited_samples", "visited_violations"]

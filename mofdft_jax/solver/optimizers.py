"""The optimisers of the density solver: one registry of optax transformations (issue 17).

Every optimiser is an optax :class:`~optax.GradientTransformation` (or
:class:`~optax.GradientTransformationExtraArgs`) that :func:`mofdft_jax.solver.solve` applies to
the **projected** gradient P∇E, P = I − wwᵀ/(wᵀw), at the iterate p. Its update δ is projected
again onto the plane wᵀδ = 0 and the next iterate re-projected onto wᵀp = N (rounding drift), so
the electron count holds to ~10⁻¹⁴ whatever the transformation does (Adam-like transformations
would otherwise leave the plane, anchors §1.5).

Registry (:data:`OPTIMIZERS`; the CLI's ``--optimizer`` choices and help text read it):

=================  ============================================================  ===========
name               update                                                        default lr
=================  ============================================================  ===========
``sgd``            δ = −ε Pg: the paper's plain projected SGD (spec §4.2, §4.4)    1e-3
``momentum``       heavy-ball SGD, m ← 0.9 m + Pg, δ = −ε m (STRUCTURES25)          3e-3
``precond``        δ = −ε M⁻¹(g − λw), λ = wᵀM⁻¹g / wᵀM⁻¹w (metric M, below)       0.1
``lbfgs``          optax L-BFGS (memory 10) + zoom line search, Euclidean p-space  1
``precond-lbfgs``  the same L-BFGS in the coordinates y = Lᵀp of the metric          1
                   M = LLᵀ (preconditioned L-BFGS)
=================  ============================================================  ===========

**The metric** (:func:`make_metric`). The Hessian of E in the tangent plane is W̃ (Hartree) plus
the kinetic and XC Hessians. The kinetic part dominates the high-frequency (compact-function) end,
so the Coulomb matrix alone is a poor metric; measured on water APBE+PBE (grid level 1, MINAO
density, 155-dimensional tangent plane), the condition number of the constrained Hessian in metric
M is

=================  =========  ================
M                  at MINAO   after 1000 SGD steps
=================  =========  ================
identity (sgd)     1.0e4      1.1e4
W̃ (Coulomb)       1.1e4      8.3e2
diag(W̃)           2.4e6      —
S (overlap)        38         80
S + W̃             19         24 (0.3 W̃: 24)
per-atom blocks    2e4        —
=================  =========  ================

so the default metric is ``"overlap+coulomb"``, M = S + W̃ (S the density-basis overlap, both
dense). The constrained steepest-descent direction in metric M is M⁻¹(g − λw) with λ making
wᵀδ = 0 (the M-orthogonal projection onto the tangent plane; the same for g and Pg, since λ
absorbs any multiple of w). Its largest eigenvalue is ~13 on water, so ε ≈ 0.1 is stable and near
1/λ_max. When the bundle has no dense overlap the metric falls back to W̃, and without a dense W̃
(compressed Coulomb of large molecules) to the identity (``precond`` is then SGD); the kind used is
reported.

The metric is data: its Cholesky factor is built once per solve (:func:`make_metric`, a jitted
function of the bundle's arrays) and passed to the transformation as the extra argument
``metric`` of ``update`` — never closed over (house rule: big arrays are arguments).

**L-BFGS and the constraint.** optax's ``lbfgs`` needs ``value``, ``grad`` and ``value_fn`` (its
zoom line search evaluates trial points). The solver passes the projected value function
f(p) = E(p + w(N − wᵀp)/(wᵀw)), which equals E on the plane and is constant along w, so its
gradient is exactly P∇E(p) and every L-BFGS direction (a combination of such gradients and of
differences of iterates) lies in the tangent plane: L-BFGS solves the constrained problem as an
unconstrained one without forming an orthonormal basis Z of the plane (an ``(naux, naux−1)``
matrix). ``precond-lbfgs`` runs the same algorithm on f(L⁻ᵀy) with the gradient L⁻¹Pg
(:func:`in_metric`); the update L⁻ᵀδy is re-projected onto wᵀδ = 0, which changes no value of f.
Each L-BFGS step costs the loop's evaluation plus the line search's (usually one trial: ~2
value-and-gradient evaluations a step; ``SolveResult.n_evaluations`` counts them).

**Measured** (ethanol APBE+PBE at the paper's settings: 6-31G(2df,p) MINAO start, even-tempered
density basis naux = 454, grid level 2 with 65 706 points; 2-core CPU shared with another job;
``solve(terms_fn, p_minao, bundle, optimizer=NAME, steps=3000 (sgd: 1000), gtol=1e-4,
stop_at_gtol=True)`` called twice, the second call's ``wall_s``; the first call adds compilation,
e.g. 11.5 s in all for ``precond-lbfgs``, and that is what ``mofdft solve ethanol.xyz --functional
apbe --optimizer NAME --gtol 1e-4 --json`` reports as ``solve_wall_s``):

=================  ==========  ===========  ==========  ====================================
optimiser          steps       evaluations  wall time   result
=================  ==========  ===========  ==========  ====================================
``precond-lbfgs``  27          56           4.9 s       converged, E = −173.1207430 Ha
``precond``        317         318          24 s        converged, same E to 3e-9 Ha
``lbfgs``          860         1753         127 s       converged, same E to 3e-8 Ha
``momentum``       3000 (max)  3001         381 s       |P∇E| = 0.03, 0.059 Ha above
``sgd`` (paper)    1000        1001         121 s*      |P∇E| = 1.8, 2.9 Ha above (71–78 s idle)
=================  ==========  ===========  ==========  ====================================

(* one call, compilation included.) The minimum has no negative density on the paper's grid
(ν = 0), so the bare APBE functional has a minimum there and the optional penalty changes nothing
at it; on grid level 0 the optimisers find a spurious minimum (water: −1268 Ha, 0.7 electrons of
negative density), which the ``negative-density`` warning flags.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import optax

from mofdft_jax.types import Array, Float


# ---------------------------------------------------------------------------------------------
# the metric M of the preconditioned optimisers
# ---------------------------------------------------------------------------------------------

#: Metric kinds of :func:`make_metric`, in the order ``"auto"`` tries them.
METRIC_KINDS = ("overlap+coulomb", "coulomb", "overlap", "identity")


class Metric(NamedTuple):
    """A symmetric positive definite metric M of the density-coefficient space, factorised.

    Exactly one of ``chol`` (dense M = LLᵀ) and ``diag`` (diagonal M) is set; the other is
    ``None`` (a different pytree structure, so a different compilation).

    Attributes:
      norm: ``(naux,)`` w, the electron-count vector.
      chol: ``(naux, naux)`` lower Cholesky factor L of M, or ``None``.
      diag: ``(naux,)`` the diagonal of a diagonal M, or ``None``.
      minv_norm: ``(naux,)`` M⁻¹w.
      norm_minv_norm: ``()`` wᵀM⁻¹w.
    """

    norm: Float[Array, "naux"]
    chol: Optional[Float[Array, "naux naux"]]
    diag: Optional[Float[Array, "naux"]]
    minv_norm: Float[Array, "naux"]
    norm_minv_norm: Float[Array, ""]


def metric_solve(metric: Metric, g: Float[Array, "naux"]) -> Float[Array, "naux"]:
    """M⁻¹g, ``(naux,)``."""
    if metric.chol is not None:
        return jsl.cho_solve((metric.chol, True), g)
    return g / metric.diag


def metric_inv_sqrt(metric: Metric, g: Float[Array, "naux"]) -> Float[Array, "naux"]:
    """L⁻¹g (gradient into the metric coordinates y = Lᵀp), ``(naux,)``."""
    if metric.chol is not None:
        return jsl.solve_triangular(metric.chol, g, lower=True)
    return g / jnp.sqrt(metric.diag)


def metric_inv_sqrt_t(metric: Metric, y: Float[Array, "naux"]) -> Float[Array, "naux"]:
    """L⁻ᵀy (a step in the metric coordinates back to p), ``(naux,)``."""
    if metric.chol is not None:
        return jsl.solve_triangular(metric.chol, y, lower=True, trans="T")
    return y / jnp.sqrt(metric.diag)


def metric_sqrt_t(metric: Metric, p: Float[Array, "naux"]) -> Float[Array, "naux"]:
    """Lᵀp (coefficients into the metric coordinates), ``(naux,)``."""
    if metric.chol is not None:
        return metric.chol.T @ p
    return jnp.sqrt(metric.diag) * p


def constrained_metric_direction(metric: Metric, g: Float[Array, "naux"]) -> Float[Array, "naux"]:
    """d = M⁻¹(g − λw), λ = wᵀM⁻¹g / wᵀM⁻¹w: the steepest-ascent direction of metric M in the
    plane wᵀd = 0 (then wᵀd = wᵀM⁻¹g − λ wᵀM⁻¹w = 0 exactly, up to rounding)."""
    u = metric_solve(metric, g)
    lam = jnp.dot(metric.norm, u) / metric.norm_minv_norm
    return u - lam * metric.minv_norm


def _factorise(m, norm):
    chol = jnp.linalg.cholesky(m)
    minv_norm = jsl.cho_solve((chol, True), norm)
    return Metric(norm=norm, chol=chol, diag=None, minv_norm=minv_norm,
                  norm_minv_norm=jnp.dot(norm, minv_norm))


@jax.jit
def _dense_metric(m, norm) -> Metric:
    return _factorise(jnp.asarray(m, jnp.float64), norm)


@jax.jit
def _sum_metric(a, b, norm) -> Metric:
    return _factorise(jnp.asarray(a, jnp.float64) + jnp.asarray(b, jnp.float64), norm)


def identity_metric(norm: Float[Array, "naux"]) -> Metric:
    """M = I (diagonal form)."""
    norm = jnp.asarray(norm, jnp.float64)
    return Metric(norm=norm, chol=None, diag=jnp.ones_like(norm), minv_norm=norm,
                  norm_minv_norm=jnp.dot(norm, norm))


def _is_dense(x) -> bool:
    return isinstance(x, (jnp.ndarray, jax.Array)) or type(x).__module__ == "numpy"


def integral_bundle_of(data):
    """The :class:`~mofdft_jax.bundle.IntegralBundle` of the solver's data argument (itself, or
    the ``bundle`` field of a :class:`~mofdft_jax.solver.learned.LearnedInputs`)."""
    return getattr(data, "bundle", data)


def make_metric(data, kind: str = "auto") -> tuple[Metric, str]:
    """The factorised metric of ``kind`` for the solver's data argument (see module docstring).

    Args:
      data: an :class:`~mofdft_jax.bundle.IntegralBundle` or an object with a ``bundle`` field.
      kind: ``"overlap+coulomb"`` (M = S + W̃), ``"coulomb"`` (W̃), ``"overlap"`` (S),
        ``"identity"``, or ``"auto"``: the first of these the bundle supports (dense W̃ and S).

    Returns:
      ``(Metric, kind used)``. The Cholesky factorisation is O(naux³) once per solve (ethanol,
      naux ≈ 300: milliseconds).
    """
    bundle = integral_bundle_of(data)
    norm = jnp.asarray(bundle.norm, jnp.float64)
    coulomb = bundle.coulomb if _is_dense(bundle.coulomb) else None
    overlap = getattr(bundle, "overlap", None)
    available = {"overlap+coulomb": coulomb is not None and overlap is not None,
                 "coulomb": coulomb is not None, "overlap": overlap is not None,
                 "identity": True}
    if kind == "auto":
        kind = next(k for k in METRIC_KINDS if available[k])
    if kind not in available:
        raise ValueError(f"unknown metric {kind!r}; choose one of {('auto',) + METRIC_KINDS}")
    if not available[kind]:
        raise ValueError(f"metric {kind!r} needs a dense Coulomb matrix and/or the overlap in "
                         "the bundle (build_integral_bundle(..., with_overlap=True))")
    if kind == "overlap+coulomb":
        return _sum_metric(overlap, coulomb, norm), kind
    if kind == "coulomb":
        return _dense_metric(coulomb, norm), kind
    if kind == "overlap":
        return _dense_metric(overlap, norm), kind
    return identity_metric(norm), kind


# ---------------------------------------------------------------------------------------------
# transformations
# ---------------------------------------------------------------------------------------------

def scale_by_constrained_metric() -> optax.GradientTransformationExtraArgs:
    """g ↦ M⁻¹(g − λw) (:func:`constrained_metric_direction`), M from the extra argument
    ``metric`` (a :class:`Metric`) of ``update``; stateless."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, *, metric: Metric, **extra_args):
        del params, extra_args
        return constrained_metric_direction(metric, updates), state

    return optax.GradientTransformationExtraArgs(init, update)


def in_metric(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Run ``inner`` in the metric coordinates y = Lᵀp of M = LLᵀ (extra argument ``metric``).

    ``update(g, state, p, metric=M, value=E, grad=g, value_fn=f)`` hands ``inner`` the gradient
    L⁻¹g, the parameters Lᵀp, the value E and the value function y ↦ f(L⁻ᵀy), and returns the
    step L⁻ᵀδy in p. ``inner.init`` only reads shapes (true of optax's L-BFGS and line searches),
    so the state initialised from p serves y as well.
    """
    inner = optax.with_extra_args_support(inner)

    def init(params):
        return inner.init(params)

    def update(updates, state, params=None, *, metric: Metric, **extra_args):
        g_y = metric_inv_sqrt(metric, updates)
        y = None if params is None else metric_sqrt_t(metric, params)
        extra = dict(extra_args)
        if "grad" in extra:
            extra["grad"] = g_y
        if "value_fn" in extra:
            value_fn = extra["value_fn"]
            extra["value_fn"] = lambda yy: value_fn(metric_inv_sqrt_t(metric, yy))
        delta_y, state = inner.update(g_y, state, y, **extra)
        return metric_inv_sqrt_t(metric, delta_y), state

    return optax.GradientTransformationExtraArgs(init, update)


def _lbfgs(lr) -> optax.GradientTransformationExtraArgs:
    """optax L-BFGS, memory 10; ``lr`` scales the direction before the zoom line search (whose
    first trial step is 1), so it is the first trial step length."""
    return optax.lbfgs(learning_rate=lr, memory_size=10,
                       linesearch=optax.scale_by_zoom_linesearch(
        max_linesearch_steps=20, initial_guess_strategy="one"))


# ---------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------

class Optimizer(NamedTuple):
    """One registry entry.

    Attributes:
      name: CLI name.
      make: ``lr -> GradientTransformation``; called inside the jitted solver with a traced
        ``lr`` (so a new step size does not recompile).
      description: one line for ``--help``.
      default_lr: step size when the caller gives none.
      uses_metric: ``update`` takes the extra argument ``metric`` (:class:`Metric`).
      uses_value_fn: ``update`` takes ``value``, ``grad`` and ``value_fn`` (line searches).
    """

    name: str
    make: Callable[[object], optax.GradientTransformation]
    description: str
    default_lr: float
    uses_metric: bool = False
    uses_value_fn: bool = False


def _entries():
    return (
        Optimizer("sgd", lambda lr: optax.sgd(lr),
                  "plain projected SGD, p <- p - lr P grad E (the paper's; default lr 1e-3)",
                  1e-3),
        Optimizer("momentum", lambda lr: optax.sgd(lr, momentum=0.9),
                  "SGD with heavy-ball momentum 0.9 (STRUCTURES25's default; lr 3e-3)", 3e-3),
        Optimizer("precond", lambda lr: optax.chain(scale_by_constrained_metric(),
                                                    optax.scale_by_learning_rate(lr)),
                  "gradient descent in the metric S + W (overlap + Coulomb), "
                  "d = -lr M^-1 (g - lambda w) (lr 0.1)", 0.1, uses_metric=True),
        Optimizer("lbfgs", _lbfgs,
                  "L-BFGS (optax, memory 10) with a zoom line search on the projected energy "
                  "(lr: first trial step, 1)", 1.0, uses_value_fn=True),
        Optimizer("precond-lbfgs", lambda lr: in_metric(_lbfgs(lr)),
                  "L-BFGS with zoom line search in the coordinates of the metric S + W "
                  "(preconditioned L-BFGS; 1)", 1.0, uses_metric=True, uses_value_fn=True),
    )


#: Name → :class:`Optimizer`.
OPTIMIZERS: dict[str, Optimizer] = {o.name: o for o in _entries()}


def get_optimizer(name: str) -> Optimizer:
    """The registry entry ``name`` (``ValueError`` listing the choices otherwise)."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of "
                         f"{', '.join(OPTIMIZERS)}") from None


def optimizer_help() -> str:
    """``name: description`` of every registered optimiser, for ``--help``."""
    return "; ".join(f"{o.name}: {o.description}" for o in OPTIMIZERS.values())


__all__ = ["METRIC_KINDS", "Metric", "OPTIMIZERS", "Optimizer", "constrained_metric_direction",
           "get_optimizer", "identity_metric", "in_metric", "integral_bundle_of", "make_metric",
           "metric_inv_sqrt", "metric_inv_sqrt_t", "metric_solve", "metric_sqrt_t",
           "optimizer_help", "scale_by_constrained_metric"]

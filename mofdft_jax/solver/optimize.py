"""Density optimisation under wᵀp = N with pluggable projected optimisers (spec §4.2–§4.5,
issue 17).

The paper's update (and its code's) is plain SGD on the raw coefficient vector with the gradient
projected onto the plane of constant electron number:

.. math::  p ← p − ε P ∇_p E(p),\\qquad P = I − \\frac{w wᵀ}{wᵀw}

(1000 steps, ε = 10⁻³; the released ethanol scripts use 5·10⁻⁴). Here that update is one entry,
``sgd``, of a registry of optax transformations (:mod:`mofdft_jax.solver.optimizers`: ``sgd``,
``momentum``, ``precond``, ``lbfgs``, ``precond-lbfgs``): the transformation receives P∇E, its
update δ is projected again onto wᵀδ = 0, and p ← p + δ is re-projected onto wᵀp = N.

**Defaults** (explicit, the paper's behaviour stays the default of every existing call):

* ``optimizer="sgd"``: ``stop_at_gtol`` defaults to **False** (all ``steps`` updates run, as in the
  paper) and ``rule`` to ``"iid"`` (the post-hoc step selection below); ``lr`` to 1e-3. These are
  the numbers of the reproduction presets and they do not change.
* any other optimiser: ``stop_at_gtol`` defaults to **True** (the loop ends at the first state
  with ‖P∇E‖ < ``gtol``, default 1e-4) and ``rule`` to ``"last"`` (the converged last iterate is
  reported; the paper's IID/OOD choices are still computed as a second column); ``lr`` to the
  registry's default. In general the default rule follows the stop: ``"last"`` with
  ``stop_at_gtol``, ``"iid"`` without.

Either can be set explicitly for any optimiser (``sgd`` with ``stop_at_gtol=True``, ``rule="last"``
is "SGD to a tolerance").

The whole run is one ``jax.jit``-compiled ``lax.while_loop``; the energy function and the optimiser
(a registry name, or a transformation object, hashed by identity) are static arguments; the
integral bundle, the step size, the tolerance, the number of steps, the stop flag and the
factorised metric of the preconditioned optimisers are ordinary arguments (the bundle is never
closed over), so a second molecule of the same shapes, a new step size or another number of steps
within the same power-of-two trajectory buffer reuses the compiled code. The optimiser's state
lives in the loop carry.

**Trajectory.** ``steps`` updates visit the ``steps + 1`` states p₀ … p_steps (fewer when the run
stops at the tolerance or diverges); the energy E_i, the
gradient norm ‖∇E(p_i)‖, the projected gradient norm ‖P∇E(p_i)‖, the electron count wᵀp_i and,
when the energy function returns a dict, every energy term are recorded at each state. (The
paper's code evaluates the first ``steps`` of these states only; the last update's result is never
evaluated. ``steps = 0`` therefore evaluates the energy of the initial density.)

**Electron count.** The initial coefficients are moved onto the plane wᵀp = N by the smallest
correction along w, and after every update the rounding drift is removed the same way
(p ← p + w (N − wᵀp)/(wᵀw)), so wᵀp_i = N to ~10⁻¹⁴ along the whole trajectory.

**Which step is reported** (spec §4.5; chosen afterwards, as in the paper; the coefficients of the
chosen state are kept in the loop carry, so the trajectory of p need not be stored):

* ``rule="iid"`` (in-distribution: ethanol, QM9): i* = argmin_i |E_{i+1} − E_i| and the state
  i* + 1 is reported (the code's ``np.argmin(delta_e) + 1``);
* ``rule="ood"`` (extrapolation: QMugs, chignolin): the first strict local minimum of the gradient
  norm (state i); else the first strict local minimum j of |E_{j+1} − E_j| (state j + 1); else the
  IID choice. *Code quirk, followed here:* the column the released code calls "projected gradnorm"
  holds the **unprojected** gradient norm, so the unprojected norm is used. Strict local minima of
  interior points, as ``scipy.signal.argrelextrema(x, np.less)``;
* ``rule="last"``: the last valid state (the converged iterate when the run stops at ``gtol``).

**True convergence** is reported separately: the first state whose projected gradient norm is below
``gtol`` (``converged_step``; the STRUCTURES25 critique of the paper's post-hoc heuristic).

**Status.** ``converged`` (some state met ``gtol``), ``max-steps`` (none did), or ``diverged``: a
non-finite energy or gradient, or an energy that rose above the initial one by more than
``max_rise · max(|E₀|, 1 Ha)`` (a step size far too large). The loop ends at the first such
state; the trajectory is cut before it, the chosen step is selected among the valid states only,
and ``message`` says what happened where. No NaN is ever returned as a result.

**Cost.** One value-and-gradient evaluation per state; the L-BFGS line search adds its own trial
evaluations (``n_evaluations`` counts both). ``wall_s`` is the host wall time of the call
(compilation included on the first call of a shape).

**Negative density.** No non-negativity constraint is enforced (spec §4.2), and the masked grid
functionals give negative-density points zero kinetic and XC energy, so an optimiser can exploit
them. When the data carry a quadrature grid, the integrated negative density
ν = Σ_g w_g max(−ρ(r_g), 0) (electrons) of the reported state is computed after the run and
``warnings`` contains ``"negative-density"`` when ν > ``negative_density_tol`` (default 0.01
electrons). The callers may pass their own ``negative_density_fn(coeffs, data) -> electrons``
(e.g. for data without a grid in the bundle). The paper's optional penalty (SI B.5.1) is an
energy term, :func:`mofdft_jax.solver.energy.make_energy_fn` ``negative_density_penalty=``, off by
default.

**Progress.** ``progress=fn`` (or the older :func:`progress_handler` context) receives
``fn(step, energy, proj_grad_norm)`` from inside the compiled loop, about every 1 % of ``steps``
(at most every 10 states) and at the last state. The compiled code does not depend on ``fn``: the
call passes an integer key of a per-call table, so no callback is baked into a compilation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import time
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mofdft_jax.config import ensure_x64
from mofdft_jax.solver.energy import TERM_NAMES, integrated_negative_density, sum_terms
from mofdft_jax.solver.optimizers import Metric, get_optimizer, integral_bundle_of, make_metric
from mofdft_jax.types import Array, Float, Int

#: Paper defaults (spec §4.4).
DEFAULT_STEPS = 1000
DEFAULT_LR = 1e-3
#: Default tolerance on ‖P∇E‖ for the true convergence criterion (Ha per unit coefficient).
DEFAULT_GTOL = 1e-4
#: Divergence guard: E_i − E₀ > max_rise · max(|E₀|, 1) counts as divergence.
DEFAULT_MAX_RISE = 1.0
#: Integrated negative density (electrons) above which ``warnings`` has ``"negative-density"``.
DEFAULT_NEGATIVE_DENSITY_TOL = 1e-2
#: The paper's optimiser (spec §4.4), default of :func:`solve`.
DEFAULT_OPTIMIZER = "sgd"

STATUS_CONVERGED = "converged"
STATUS_MAX_STEPS = "max-steps"
STATUS_DIVERGED = "diverged"
RULES = ("iid", "ood", "last")
WARNING_NEGATIVE_DENSITY = "negative-density"


# ---------------------------------------------------------------------------------------------
# projection onto the electron-number plane
# ---------------------------------------------------------------------------------------------

def project_gradient(grad: Float[Array, "naux"],
                     norm: Float[Array, "naux"]) -> Float[Array, "naux"]:
    """P g = g − w (wᵀg)/(wᵀw): the gradient component that keeps wᵀp fixed (spec §4.2)."""
    return grad - norm * (jnp.dot(norm, grad) / jnp.dot(norm, norm))


def project_onto_plane(coeffs: Float[Array, "naux"], norm: Float[Array, "naux"],
                       n_electrons) -> Float[Array, "naux"]:
    """The point of the plane wᵀp = N nearest to ``coeffs``: p + w (N − wᵀp)/(wᵀw)."""
    return coeffs + norm * ((n_electrons - jnp.dot(norm, coeffs)) / jnp.dot(norm, norm))


# ---------------------------------------------------------------------------------------------
# step selection (spec §4.5): one online state machine, used by the solver and by choose_steps
# ---------------------------------------------------------------------------------------------

class _Selection(NamedTuple):
    """Running state of the step-selection rules while the trajectory is produced."""

    e_prev: Float[Array, ""]      # E_{t-1}
    gn_prev: Float[Array, ""]     # ‖g_{t-1}‖
    gn_prev2: Float[Array, ""]    # ‖g_{t-2}‖
    d_prev: Float[Array, ""]      # |ΔE_{t-2}| = |E_{t-1} − E_{t-2}|
    d_prev2: Float[Array, ""]     # |ΔE_{t-3}|
    best_d: Float[Array, ""]      # running min of |ΔE|
    iid_step: Int[Array, ""]      # argmin |ΔE| + 1 (0 while no step was taken)
    gmin_step: Int[Array, ""]     # first strict local min of ‖g‖ (-1: none yet)
    dmin_step: Int[Array, ""]     # first strict local min j of |ΔE|, reported as j + 1 (-1)
    conv_step: Int[Array, ""]     # first state with ‖Pg‖ < gtol (-1)


def _init_selection() -> _Selection:
    nan = jnp.asarray(jnp.nan)
    return _Selection(nan, nan, nan, nan, nan, jnp.asarray(jnp.inf), jnp.asarray(0),
                      jnp.asarray(-1), jnp.asarray(-1), jnp.asarray(-1))


def _update_selection(sel: _Selection, t, energy, grad_norm, proj_grad_norm, gtol, valid):
    """Feed state t into the selection rules.

    Returns the new state and four flags: store p_t as the IID choice; store p_{t-1} as the first
    gradient-norm local minimum; store p_{t-1} as the first |ΔE| local minimum; store p_t as the
    converged state. Invalid states (after a divergence) change nothing. NaN history (t < 3)
    makes every comparison false, so the rules only fire once enough states exist.
    """
    d = jnp.abs(energy - sel.e_prev)                    # |ΔE_{t-1}|, NaN at t = 0
    take_iid = valid & (d < sel.best_d)
    take_g = (valid & (sel.gmin_step < 0) & (sel.gn_prev2 > sel.gn_prev)
              & (sel.gn_prev < grad_norm))
    take_d = valid & (sel.dmin_step < 0) & (sel.d_prev2 > sel.d_prev) & (sel.d_prev < d)
    take_conv = valid & (sel.conv_step < 0) & (proj_grad_norm < gtol)
    keep = lambda new, old: jnp.where(valid, new, old)  # noqa: E731
    new = _Selection(
        e_prev=keep(energy, sel.e_prev),
        gn_prev=keep(grad_norm, sel.gn_prev),
        gn_prev2=keep(sel.gn_prev, sel.gn_prev2),
        d_prev=keep(d, sel.d_prev),
        d_prev2=keep(sel.d_prev, sel.d_prev2),
        best_d=jnp.where(take_iid, d, sel.best_d),
        iid_step=jnp.where(take_iid, t, sel.iid_step),
        gmin_step=jnp.where(take_g, t - 1, sel.gmin_step),
        dmin_step=jnp.where(take_d, t - 1, sel.dmin_step),
        conv_step=jnp.where(take_conv, t, sel.conv_step),
    )
    return new, (take_iid, take_g, take_d, take_conv)


def _ood_step(sel: _Selection):
    return jnp.where(sel.gmin_step >= 0, sel.gmin_step,
                     jnp.where(sel.dmin_step >= 0, sel.dmin_step, sel.iid_step))


class StepChoice(NamedTuple):
    """Steps chosen by the rules of spec §4.5 on one trajectory (state indices; -1: none)."""

    iid: int
    ood: int
    ood_criterion: str
    grad_local_min: int
    delta_energy_local_min: int
    converged: int


def _ood_criterion(gmin: int, dmin: int) -> str:
    if gmin >= 0:
        return "first local minimum of the gradient norm"
    if dmin >= 0:
        return "first local minimum of |dE|"
    return "argmin |dE|"


def choose_steps(energy, grad_norm, proj_grad_norm=None, *, gtol: float = DEFAULT_GTOL
                 ) -> StepChoice:
    """Apply the reporting rules of spec §4.5 to a recorded trajectory (host helper).

    Runs the same state machine the solver runs online, so the solver's choice can be checked on
    any constructed trajectory.

    Args:
      energy: ``(n,)`` energies E_0 … E_{n-1}.
      grad_norm: ``(n,)`` unprojected gradient norms (used by the OOD rule, code quirk).
      proj_grad_norm: ``(n,)`` projected gradient norms for the convergence criterion
        (``None``: no convergence check).
    """
    energy = jnp.asarray(energy, dtype=jnp.float64)
    grad_norm = jnp.asarray(grad_norm, dtype=jnp.float64)
    pgn = (jnp.full_like(energy, jnp.inf) if proj_grad_norm is None
           else jnp.asarray(proj_grad_norm, dtype=jnp.float64))

    sel = _choose_scan(energy, grad_norm, pgn, jnp.asarray(gtol, jnp.float64))
    gmin, dmin = int(sel.gmin_step), int(sel.dmin_step)
    return StepChoice(iid=int(sel.iid_step), ood=int(_ood_step(sel)),
                      ood_criterion=_ood_criterion(gmin, dmin), grad_local_min=gmin,
                      delta_energy_local_min=dmin, converged=int(sel.conv_step))


@jax.jit
def _choose_scan(energy, grad_norm, proj_grad_norm, gtol) -> _Selection:
    def body(sel, xs):
        t, e, gn, pg = xs
        sel, _ = _update_selection(sel, t, e, gn, pg, gtol, jnp.asarray(True))
        return sel, None

    sel, _ = jax.lax.scan(body, _init_selection(),
                          (jnp.arange(energy.shape[0]), energy, grad_norm, proj_grad_norm))
    return sel


# ---------------------------------------------------------------------------------------------
# progress reporting from inside the compiled loop
# ---------------------------------------------------------------------------------------------

ProgressFn = Callable[[int, float, float], None]

#: Handlers of :func:`progress_handler` blocks (called for every solve inside the block).
_PROGRESS_HANDLERS: list[ProgressFn] = []
#: Per-call callbacks of ``solve(..., progress=fn)``, keyed by the integer the call passes into the
#: compiled loop (removed when the call returns).
_CALL_PROGRESS: dict[int, ProgressFn] = {}
_CALL_KEYS = itertools.count(1)


def _dispatch_progress(key, t, energy, proj_grad_norm) -> None:
    step, e, g = int(t), float(energy), float(proj_grad_norm)
    fn = _CALL_PROGRESS.get(int(key))
    if fn is not None:
        fn(step, e, g)
    for handler in list(_PROGRESS_HANDLERS):
        handler(step, e, g)


@contextlib.contextmanager
def progress_handler(fn: ProgressFn):
    """Within the ``with`` block, ``fn(step, energy, proj_grad_norm)`` is called about 100 times
    per :func:`solve` run (host callback; the compiled code does not depend on ``fn``). Prefer
    ``solve(..., progress=fn)``, which reaches only that call."""
    _PROGRESS_HANDLERS.append(fn)
    try:
        yield
    finally:
        _PROGRESS_HANDLERS.remove(fn)


def progress_every(steps: int):
    """States between two progress reports: ~1 % of ``steps + 1``, at most 10 (traced)."""
    return jnp.clip((steps + 1) // 100, 1, 10)


# ---------------------------------------------------------------------------------------------
# the compiled driver
# ---------------------------------------------------------------------------------------------

def _value_and_grad(energy_fn, coeffs, bundle):
    """(E, terms dict, ∇E) for an energy function returning a scalar or a dict of terms."""
    def total(p):
        out = energy_fn(p, bundle)
        if isinstance(out, dict):
            return sum_terms(out), out
        return out, {}

    (energy, terms), grad = jax.value_and_grad(total, has_aux=True)(coeffs)
    return energy, terms, grad


def _total_energy(energy_fn, coeffs, bundle):
    out = energy_fn(coeffs, bundle)
    return sum_terms(out) if isinstance(out, dict) else out


class _Carry(NamedTuple):
    t: Int[Array, ""]                # index of the state p to be evaluated
    running: jax.Array               # the loop continues
    p: Float[Array, "naux"]          # state t, to be evaluated
    p_prev: Float[Array, "naux"]     # state t-1 (the last valid state once stopped)
    p_iid: Float[Array, "naux"]
    p_gmin: Float[Array, "naux"]
    p_dmin: Float[Array, "naux"]
    p_conv: Float[Array, "naux"]
    opt_state: object                # the optax transformation's state
    n_states: Int[Array, ""]         # states evaluated so far (the invalid last one included)
    n_extra_evals: Int[Array, ""]    # line-search evaluations
    e0: Float[Array, ""]
    diverged_step: Int[Array, ""]
    diverged_energy: Float[Array, ""]
    diverged_reason: Int[Array, ""]  # 0 none, 1 non-finite energy/gradient, 2 energy blow-up
    sel: _Selection


def trajectory_capacity(steps: int) -> int:
    """Length of the compiled trajectory buffers for ``steps`` updates: the next power of two
    ≥ steps + 1 (at least 8), so runs of similar length share one compilation."""
    return max(8, 1 << int(steps).bit_length())


def _make_transformation(optimizer, lr):
    """(transformation, uses_metric, uses_value_fn) of a registry name or a transformation."""
    if isinstance(optimizer, str):
        spec = get_optimizer(optimizer)
        return spec.make(lr), spec.uses_metric, spec.uses_value_fn
    return optimizer, False, isinstance(optimizer, optax.GradientTransformationExtraArgs)


def _linesearch_steps(opt_state):
    """Line-search evaluations recorded in an optax state (0 when it has no line search)."""
    n = optax.tree_utils.tree_get(opt_state, "num_linesearch_steps", default=None)
    return jnp.asarray(0) if n is None else jnp.asarray(n, dtype=jnp.int32).astype(int)


@functools.partial(jax.jit, static_argnames=("energy_fn", "optimizer", "capacity",
                                             "store_coeffs"))
def _solve_loop(energy_fn, p0, bundle, steps, lr, gtol, max_rise, stop_at_gtol, metric,
                progress_key, *, optimizer, capacity: int, store_coeffs: bool):
    """At most ``steps`` (dynamic) updates in a ``while_loop``; records go to ``(capacity,)``
    buffers. ``metric`` is a :class:`~mofdft_jax.solver.optimizers.Metric` or ``None``."""
    norm = bundle.norm
    n_el = jnp.asarray(bundle.n_electrons, dtype=p0.dtype)
    p0 = project_onto_plane(p0, norm, n_el)
    shapes = jax.eval_shape(lambda p: _value_and_grad(energy_fn, p, bundle), p0)
    every = progress_every(steps)
    tx, uses_metric, uses_value_fn = _make_transformation(optimizer, lr)

    def value_fn(q):
        """The projected energy f(q) = E(q + w(N − wᵀq)/wᵀw): ∇f = P∇E on the plane."""
        return _total_energy(energy_fn, project_onto_plane(q, norm, n_el), bundle)

    def optimizer_step(p, pg, energy, opt_state):
        extra = {}
        if uses_value_fn:
            extra.update(value=energy, grad=pg, value_fn=value_fn)
        if uses_metric:
            extra["metric"] = metric
        updates, opt_state = tx.update(pg, opt_state, p, **extra)
        delta = project_gradient(updates, norm)
        return project_onto_plane(p + delta, norm, n_el), opt_state

    def keep(p, pg, energy, opt_state):
        return p, opt_state

    def body(state):
        c, rec = state
        t = c.t
        energy, terms, grad = _value_and_grad(energy_fn, c.p, bundle)
        pg = project_gradient(grad, norm)
        gn, pgn = jnp.linalg.norm(grad), jnp.linalg.norm(pg)
        e0 = jnp.where(t == 0, energy, c.e0)
        # the norms too: finite components of ~1e308 overflow them
        finite = (jnp.isfinite(energy) & jnp.all(jnp.isfinite(grad)) & jnp.isfinite(gn)
                  & jnp.isfinite(pgn))
        blowup = energy - e0 > max_rise * jnp.maximum(jnp.abs(e0), 1.0)
        ok = finite & ~blowup
        sel, (t_iid, t_g, t_d, t_conv) = _update_selection(c.sel, t, energy, gn, pgn, gtol, ok)
        done = ~ok | (t >= steps) | (stop_at_gtol & ok & (pgn < gtol))
        p_next, opt_state = jax.lax.cond(done, keep, optimizer_step, c.p, pg, energy,
                                         c.opt_state)
        jax.lax.cond(ok & ((t % every == 0) | done),
                     lambda: jax.debug.callback(_dispatch_progress, progress_key, t, energy, pgn),
                     lambda: None)
        new = _Carry(
            t=t + 1,
            running=~done,
            p=p_next,
            p_prev=jnp.where(ok, c.p, c.p_prev),
            p_iid=jnp.where(t_iid, c.p, c.p_iid),
            p_gmin=jnp.where(t_g, c.p_prev, c.p_gmin),
            p_dmin=jnp.where(t_d, c.p_prev, c.p_dmin),
            p_conv=jnp.where(t_conv, c.p, c.p_conv),
            opt_state=opt_state,
            n_states=t + 1,
            n_extra_evals=c.n_extra_evals + jnp.where(done, 0, _linesearch_steps(opt_state)),
            e0=e0,
            diverged_step=jnp.where(ok, c.diverged_step, t),
            diverged_energy=jnp.where(ok, c.diverged_energy, energy),
            diverged_reason=jnp.where(ok, c.diverged_reason, jnp.where(finite, 2, 1)),
            sel=sel,
        )
        record = {"energy": energy, "grad_norm": gn, "proj_grad_norm": pgn,
                  "n_electrons": jnp.dot(norm, c.p), "terms": terms}
        if store_coeffs:
            record["coeffs"] = c.p
        rec = jax.tree.map(lambda buf, x: buf.at[t].set(x), rec, record)
        return new, rec

    init = _Carry(t=jnp.asarray(0), running=jnp.asarray(True), p=p0, p_prev=p0, p_iid=p0,
                  p_gmin=p0, p_dmin=p0, p_conv=p0, opt_state=tx.init(p0),
                  n_states=jnp.asarray(0), n_extra_evals=jnp.asarray(0),
                  e0=jnp.asarray(jnp.nan, p0.dtype), diverged_step=jnp.asarray(-1),
                  diverged_energy=jnp.asarray(jnp.nan, p0.dtype),
                  diverged_reason=jnp.asarray(0), sel=_init_selection())
    energy_s, terms_s, _ = shapes
    buffers = {"energy": jnp.full((capacity,), jnp.nan, energy_s.dtype),
               "grad_norm": jnp.full((capacity,), jnp.nan, p0.dtype),
               "proj_grad_norm": jnp.full((capacity,), jnp.nan, p0.dtype),
               "n_electrons": jnp.full((capacity,), jnp.nan, p0.dtype),
               "terms": jax.tree.map(lambda s: jnp.full((capacity,), jnp.nan, s.dtype), terms_s)}
    if store_coeffs:
        buffers["coeffs"] = jnp.full((capacity,) + p0.shape, jnp.nan, p0.dtype)
    final, records = jax.lax.while_loop(lambda state: state[0].running, body, (init, buffers))
    return final, records


# ---------------------------------------------------------------------------------------------
# negative density
# ---------------------------------------------------------------------------------------------

@jax.jit
def _negative_density_on_grid(coeffs, grid):
    return integrated_negative_density(coeffs, grid)


def measure_negative_density(coeffs: Float[Array, "naux"], data) -> Optional[float]:
    """ν = Σ_g w_g max(−ρ(r_g), 0), electrons, on the grid of ``data`` (an integral bundle or a
    :class:`~mofdft_jax.solver.learned.LearnedInputs`); ``None`` when it has no grid."""
    grid = getattr(integral_bundle_of(data), "grid", None)
    if grid is None:
        return None
    return float(_negative_density_on_grid(jnp.asarray(coeffs, jnp.float64), grid))


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------

class SolveTrajectory(NamedTuple):
    """Per-state records of a run (NumPy, only the valid states 0 … n−1).

    Attributes:
      energy: ``(n,)`` total energy E_i, Ha.
      grad_norm: ``(n,)`` ‖∇E(p_i)‖.
      proj_grad_norm: ``(n,)`` ‖P∇E(p_i)‖.
      delta_energy: ``(n−1,)`` |E_{i+1} − E_i|.
      n_electrons: ``(n,)`` wᵀp_i.
      terms: ``{name: (n,)}`` energy terms (empty when the energy function returns a scalar).
      coeffs: ``(n, naux)`` the coefficients, only with ``store_coeffs=True``.
    """

    energy: np.ndarray
    grad_norm: np.ndarray
    proj_grad_norm: np.ndarray
    delta_energy: np.ndarray
    n_electrons: np.ndarray
    terms: dict
    coeffs: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True)
class SolveResult:
    """Outcome of :func:`solve`.

    Attributes:
      coeffs: ``(naux,)`` coefficients of the reported state (chosen by ``rule``).
      energy: total energy of the reported state, Ha.
      terms: energy terms of the reported state, Ha (empty for a scalar energy function).
      chosen_step: index of the reported state.
      rule: ``"iid"``, ``"ood"`` or ``"last"``; ``ood_criterion`` says which OOD criterion
        decided.
      steps_iid / steps_ood: the state each rule picks (both are always computed).
      converged_step: first state with ‖P∇E‖ < ``gtol`` (the steps to convergence), or ``None``.
      coeffs_converged: coefficients of that state (``None`` if not converged).
      status: ``converged``, ``max-steps`` or ``diverged``; ``message`` explains it.
      n_steps: number of updates actually performed (valid states − 1).
      coeffs_final / energy_final: the last valid state.
      proj_grad_norm: ‖P∇E‖ at the reported state.
      initial_count_error: wᵀp₀ − N of the coefficients passed in (before projection).
      gtol, lr: the tolerance and the step size used.
      trajectory: :class:`SolveTrajectory`.
      optimizer: registry name of the optimiser (``"custom"`` for a transformation object).
      stop_at_gtol: whether the loop stopped at the tolerance.
      max_steps: the maximum number of updates (``steps``).
      n_evaluations: value-and-gradient evaluations (states plus line-search trials).
      wall_s: host wall time of the :func:`solve` call, s (compilation included when it
        compiled).
      metric: kind of the preconditioner metric (``None`` when the optimiser has none).
      negative_density: integrated negative density of the reported state, electrons (``None``
        without a grid or a ``negative_density_fn``).
      warnings: ``("negative-density",)`` when it exceeds the tolerance, else ``()``.
    """

    coeffs: np.ndarray
    energy: float
    terms: dict
    chosen_step: int
    rule: str
    ood_criterion: str
    steps_iid: int
    steps_ood: int
    converged_step: Optional[int]
    coeffs_converged: Optional[np.ndarray]
    status: str
    message: str
    n_steps: int
    coeffs_final: np.ndarray
    energy_final: float
    proj_grad_norm: float
    initial_count_error: float
    gtol: float
    lr: float
    trajectory: SolveTrajectory
    optimizer: str = DEFAULT_OPTIMIZER
    stop_at_gtol: bool = False
    max_steps: int = DEFAULT_STEPS
    n_evaluations: int = 0
    wall_s: float = 0.0
    metric: Optional[str] = None
    negative_density: Optional[float] = None
    warnings: tuple = ()

    @property
    def converged(self) -> bool:
        return self.status == STATUS_CONVERGED

    @property
    def diverged(self) -> bool:
        return self.status == STATUS_DIVERGED


def resolve_solver_defaults(optimizer: Union[str, object] = DEFAULT_OPTIMIZER, *,
                            lr: Optional[float] = None, rule: Optional[str] = None,
                            stop_at_gtol: Optional[bool] = None) -> tuple[float, str, bool]:
    """``(lr, rule, stop_at_gtol)`` with the defaults of the module docstring filled in:
    ``sgd`` → (1e-3, ``"iid"``, False), the paper's protocol; any other optimiser → (its
    registry default, ``"last"``, True). The rule follows the stop: ``"last"`` when the run stops
    at the tolerance (the converged iterate), ``"iid"`` when all steps run. A transformation
    object has no default step size (its own is used; ``lr`` is then reported as NaN unless
    given)."""
    paper = isinstance(optimizer, str) and optimizer == "sgd"
    if lr is None:
        lr = get_optimizer(optimizer).default_lr if isinstance(optimizer, str) else float("nan")
    if stop_at_gtol is None:
        stop_at_gtol = not paper
    if rule is None:
        rule = "last" if stop_at_gtol else "iid"
    return float(lr), rule, bool(stop_at_gtol)


def solve(energy_fn: Callable, p0, bundle, *, steps: int = DEFAULT_STEPS,
          lr: Optional[float] = None, gtol: float = DEFAULT_GTOL, rule: Optional[str] = None,
          max_rise: float = DEFAULT_MAX_RISE, store_coeffs: bool = False,
          optimizer: Union[str, object] = DEFAULT_OPTIMIZER,
          stop_at_gtol: Optional[bool] = None, metric: Union[str, Metric] = "auto",
          progress: Optional[ProgressFn] = None,
          negative_density_tol: float = DEFAULT_NEGATIVE_DENSITY_TOL,
          negative_density_fn: Optional[Callable] = None) -> SolveResult:
    """Minimise ``energy_fn`` over density coefficients under wᵀp = N (spec §4.2–§4.5).

    Args:
      energy_fn: ``(coeffs, bundle) -> Ha`` or ``-> {term: Ha}`` (then the total is the sum of the
        terms and each term is recorded along the trajectory), e.g. from
        :func:`mofdft_jax.solver.make_energy_fn`. Static under ``jit``: reuse the same function
        object to avoid recompilation.
      p0: ``(naux,)`` initial coefficients (moved onto wᵀp = N first, see module docstring).
      bundle: the molecule's :class:`~mofdft_jax.bundle.IntegralBundle` (a jit argument), or any
        pytree with ``norm`` and ``n_electrons`` (e.g. ``LearnedInputs``).
      steps: maximum number of updates (paper: 1000, all of them run unless ``stop_at_gtol``);
        at most ``steps + 1`` states are evaluated.
      lr: step size ε (``None``: the optimiser's default; paper 1e-3 for ``sgd``, 5e-4 for the
        learned ethanol model).
      gtol: tolerance on ‖P∇E‖ for ``converged_step`` (and for stopping).
      rule: ``"iid"``, ``"ood"`` or ``"last"``, which state is reported (``None``: ``"last"`` with
        ``stop_at_gtol``, else ``"iid"``; see
        :func:`resolve_solver_defaults`).
      max_rise: divergence guard, see module docstring.
      store_coeffs: also return the ``(n, naux)`` trajectory of coefficients.
      optimizer: a name of :data:`~mofdft_jax.solver.optimizers.OPTIMIZERS` or an optax
        transformation (static: reuse the same object; it gets ``value``/``grad``/``value_fn``
        when it is a ``GradientTransformationExtraArgs``).
      stop_at_gtol: end the loop at the first state with ‖P∇E‖ < ``gtol`` (``None``: False for
        ``sgd``, True otherwise).
      metric: metric kind of the preconditioned optimisers (``"auto"``, see
        :func:`~mofdft_jax.solver.optimizers.make_metric`) or a prebuilt ``Metric``.
      progress: ``fn(step, energy, proj_grad_norm)`` called from the loop (module docstring).
      negative_density_tol: threshold (electrons) of the ``negative-density`` warning.
      negative_density_fn: ``(coeffs, bundle) -> electrons`` replacing the grid integral.
    """
    ensure_x64()
    t0 = time.perf_counter()
    lr, rule, stop_at_gtol = resolve_solver_defaults(optimizer, lr=lr, rule=rule,
                                                     stop_at_gtol=stop_at_gtol)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if isinstance(optimizer, str):
        spec = get_optimizer(optimizer)
        name, uses_metric = spec.name, spec.uses_metric
    else:
        name, uses_metric = "custom", False
    p0 = jnp.asarray(p0, dtype=jnp.float64)
    if p0.shape != bundle.norm.shape:
        raise ValueError(f"p0 has shape {p0.shape}, the density basis has {bundle.norm.shape}")
    metric_kind = None
    metric_data = None
    if uses_metric:
        if isinstance(metric, Metric):
            metric_data, metric_kind = metric, "given"
        else:
            metric_data, metric_kind = make_metric(bundle, metric)
    initial_count_error = float(jnp.dot(bundle.norm, p0) - bundle.n_electrons)
    key = 0
    if progress is not None:
        key = next(_CALL_KEYS)
        _CALL_PROGRESS[key] = progress
    try:
        final, rec = _solve_loop(
            energy_fn, p0, bundle, jnp.asarray(int(steps)), jnp.asarray(lr, jnp.float64),
            jnp.asarray(gtol, jnp.float64), jnp.asarray(max_rise, jnp.float64),
            jnp.asarray(bool(stop_at_gtol)), metric_data, jnp.asarray(key),
            optimizer=optimizer, capacity=trajectory_capacity(steps),
            store_coeffs=bool(store_coeffs))
        final, rec = jax.device_get((final, rec))
        if progress is not None:
            jax.effects_barrier()
    finally:
        _CALL_PROGRESS.pop(key, None)
    result = _make_result(final, rec, steps=int(steps), lr=float(lr), gtol=float(gtol),
                          rule=rule, initial_count_error=initial_count_error)
    negative = None
    if np.all(np.isfinite(result.coeffs)):
        if negative_density_fn is not None:
            negative = float(negative_density_fn(jnp.asarray(result.coeffs), bundle))
        else:
            negative = measure_negative_density(result.coeffs, bundle)
    warnings = ((WARNING_NEGATIVE_DENSITY,)
                if negative is not None and negative > negative_density_tol else ())
    return dataclasses.replace(
        result, optimizer=name, stop_at_gtol=bool(stop_at_gtol), max_steps=int(steps),
        n_evaluations=int(final.n_states) + int(final.n_extra_evals),
        metric=metric_kind, negative_density=negative, warnings=warnings,
        wall_s=time.perf_counter() - t0)


def _term_order(terms: dict) -> list[str]:
    """Term names in :data:`TERM_NAMES` order, then any others (pytrees sort dict keys)."""
    return [k for k in TERM_NAMES if k in terms] + sorted(k for k in terms if k not in TERM_NAMES)


def _make_result(final: _Carry, rec: dict, *, steps: int, lr: float, gtol: float, rule: str,
                 initial_count_error: float) -> SolveResult:
    sel = final.sel
    diverged_step = int(final.diverged_step)
    n_valid = diverged_step if diverged_step >= 0 else int(final.n_states)

    def cut(x):
        return np.asarray(x)[:n_valid]

    energy = cut(rec["energy"])
    traj = SolveTrajectory(
        energy=energy, grad_norm=cut(rec["grad_norm"]),
        proj_grad_norm=cut(rec["proj_grad_norm"]), delta_energy=np.abs(np.diff(energy)),
        n_electrons=cut(rec["n_electrons"]),
        terms={k: cut(rec["terms"][k]) for k in _term_order(rec["terms"])},
        coeffs=cut(rec["coeffs"]) if "coeffs" in rec else None)

    gmin, dmin = int(sel.gmin_step), int(sel.dmin_step)
    step_iid, step_ood = int(sel.iid_step), int(_ood_step(sel))
    conv = int(sel.conv_step)
    if rule == "last":
        chosen, coeffs = n_valid - 1, final.p_prev
    elif rule == "iid":
        chosen, coeffs = step_iid, final.p_iid
    elif gmin >= 0:
        chosen, coeffs = gmin, final.p_gmin
    elif dmin >= 0:
        chosen, coeffs = dmin, final.p_dmin
    else:
        chosen, coeffs = step_iid, final.p_iid

    if n_valid == 0:  # the initial state itself is not finite
        status = STATUS_DIVERGED
        message = ("the energy or its gradient is not finite at the initial coefficients "
                   f"(E = {float(final.diverged_energy)})")
        nan = float("nan")
        return SolveResult(
            coeffs=np.asarray(final.p_prev), energy=nan, terms={}, chosen_step=-1, rule=rule,
            ood_criterion="", steps_iid=-1, steps_ood=-1, converged_step=None,
            coeffs_converged=None, status=status, message=message, n_steps=0,
            coeffs_final=np.asarray(final.p_prev), energy_final=nan, proj_grad_norm=nan,
            initial_count_error=initial_count_error, gtol=gtol, lr=lr, trajectory=traj)

    if diverged_step >= 0:
        status = STATUS_DIVERGED
        what = ("the energy or its gradient became non-finite"
                if int(final.diverged_reason) == 1 else
                "the energy rose far above its initial value")
        message = (f"diverged: {what} at step {diverged_step} "
                   f"(E = {float(final.diverged_energy):.6g} Ha, last finite E = "
                   f"{energy[-1]:.10g} Ha at step {n_valid - 1}); "
                   f"reduce the step size (lr = {lr:g})")
    elif conv >= 0:
        status = STATUS_CONVERGED
        message = f"converged: |P grad E| < {gtol:g} first at step {conv}"
    else:
        status = STATUS_MAX_STEPS
        message = (f"max-steps: |P grad E| = {traj.proj_grad_norm[-1]:.3g} after {steps} steps "
                   f"(gtol {gtol:g})")

    return SolveResult(
        coeffs=np.asarray(coeffs), energy=float(energy[chosen]),
        terms={k: float(v[chosen]) for k, v in traj.terms.items()},
        chosen_step=chosen, rule=rule, ood_criterion=_ood_criterion(gmin, dmin),
        steps_iid=step_iid, steps_ood=step_ood,
        converged_step=conv if conv >= 0 else None,
        coeffs_converged=np.asarray(final.p_conv) if conv >= 0 else None,
        status=status, message=message, n_steps=n_valid - 1,
        coeffs_final=np.asarray(final.p_prev), energy_final=float(energy[-1]),
        proj_grad_norm=float(traj.proj_grad_norm[chosen]),
        initial_count_error=initial_count_error, gtol=gtol, lr=lr, trajectory=traj)

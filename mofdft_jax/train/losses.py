"""Training losses of the learned functional (spec §3.3, Methods 4.1 Eqs. 3–4, SI B.1.7, B.3).

For one labelled SCF step (p⁽ᵏ⁾, T⁽ᵏ⁾, ∇T⁽ᵏ⁾) of a molecule with ground state p*:

.. math::

    L = ξ_{eng} |T_θ(p) − T| + ξ_{grad} ‖\\tilde P (\\tilde∇T_θ − \\tilde∇T)‖
        + ξ_{den} ‖Δ\\tilde p_θ(p) − \\mathrm{std}(p^* − p)‖

* **Energy** (L1): T_θ and the label in kcal/mol (the network's unit, spec §2.4).
* **Gradient**: in the *rescaled* space the network sees (spec §2.3; SI B.3.1 fits ∇/λ). With
  p′ = D W^{1/2} p (local frame + natural reparametrisation) a gradient maps as
  ∇_{p′} = D W^{-1/2} ∇_p and, after p̃ = λ (p′ − p̄), as ∇_{p̃} = ∇_{p′}/λ. The label is
  exact only up to μ w (spec §1.7: ∇_p T_S = −v_eff + μ w), so the normalisation direction is
  projected out **in the same space**: w is transformed like a gradient, w̃ = D W^{-1/2} w / λ,
  and \\tilde P = I − w̃ w̃ᵀ/(w̃ᵀw̃). The μ w ambiguity of the label is then removed exactly.
* **Curvature** (ours, not in the paper; :mod:`mofdft_jax.qchem.response`): for each curvature
  label (δp′, r′ = ∇²T δp′) of a step, the relative error of the model's Hessian-vector product
  in the same rescaled, projected space, ‖P̃(∇̃²T_θ δp′ − r̃′)‖ / ‖P̃ r̃′‖ with r̃′ = r′/λ, averaged
  over the step's M directions (forward-over-reverse: one JVP of the gradient per direction).
  It trains the convexity of T_S across the SCF path, which value and gradient labels never see.
  A second, scalar form (weight ``curv``): the absolute error of the curvature along each
  direction, |δp′ᵀ∇²T_θ δp′ − δp′ᵀr′| in kcal/mol (δp normalised in the raw basis). The vector
  form is dominated by the stiff core components of r′; the scalar one weighs the soft
  directions in which a learned energy develops negative modes.
* **Δp** (ProjMINAO head, SI B.5.2): the head predicts the standardised correction
  ((p′* − p′) − mean)/std per (element, slot) (the adapter's ``standardise_delta``); the model
  adds it to the density it is given, so the target is p* − p⁽ᵏ⁾.
* **Bounds** (ours, weight ``bound``; :mod:`mofdft_jax.workflows.visited`, docs/landscape.md §6):
  rows sampled where a minimisation of an earlier model went (``mofdft sample-visited``) carry no
  labels, only three scalar host constants per row (:class:`VisitedBounds`, from E_KS, E_rest and
  p*): with δ = p_v − p*, the hinge violations (kcal/mol) of the variational bound
  T_θ(p_v) ≥ k_var (E(p_v) ≥ E_KS), the descent bound ∇T_θᵀδ ≥ −k_desc (p* − p_v is a descent
  direction of E) and the convexity bound T_θ − ∇T_θᵀδ ≤ −k_conv (T_S convex along δ; ts_res
  only), see :func:`visited_bound_violations`. Label terms are weighted by ``label_weight``
  (0 on such rows); NaN bounds are not applicable and cost nothing.

Norms (not readable in the paper, spec §3.3 "Items not found"): ``"l2"`` the Euclidean norm of the
per-step residual vector (the paper's ‖·‖ notation, default) or ``"l1"`` the sum of absolute
components ([S25] uses component-wise L1). Both are NaN-safe at zero.

All inputs are per step in the adapter's *function order* (``(naux,)`` vectors, p′ space), with the
per-atom slot layout built here by a scatter: a batch of different molecules is padded to
``(natm_max, naux_max)`` and masked (padding atoms have atomic number 0, padding functions point to
the out-of-range atom ``natm_max`` and carry zero coefficients, gradients and w).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from mofdft_jax.density.adapter import (AdapterGeometry, gather_from_slots, scatter_to_slots,
                                        slot_mask, standardise_delta)
from mofdft_jax.types import Array, Float, Int
from mofdft_jax.units import HARTREE_TO_KCAL

#: Default loss weights (ξ_eng, ξ_grad, ξ_den) of SI Table S4, by (dataset, target).
PAPER_LOSS_WEIGHTS = {
    ("ethanol", "ts_res"): (1.0, 0.1, 0.08),
    ("ethanol", "txc"): (1.0, 0.03, 1.0),
    ("qm9", "ts_res"): (1.0, 0.12, 0.005),
    ("qm9", "txc"): (1.0, 0.12, 0.05),
    ("qmugs", "txc"): (1.0, 0.1, 1.0),
    ("chignolin", "tot"): (1.0, 0.1, 1.0),
}
#: Datasets of Table S4 whose weights do not depend on the target (one row each in the paper).
_TARGET_FREE = {"qmugs", "chignolin"}
NORMS = ("l2", "l1")


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the three loss terms (spec §3.3, Table S4)."""

    energy: float = 1.0
    grad: float = 0.1
    delta: float = 0.08
    hvp: float = 0.0
    curv: float = 0.0
    bound: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def paper_loss_weights(dataset: str, target: str) -> LossWeights:
    """Table S4 weights for ``dataset`` (ethanol, qm9, qmugs, chignolin) and ``target``.

    QMugs and chignolin have one row each in the paper (TXC resp. total-energy models); their weights
    are used for any target. Unknown datasets raise ``ValueError``.
    """
    key = dataset.lower()
    if key in _TARGET_FREE:
        row = next(v for (d, _), v in PAPER_LOSS_WEIGHTS.items() if d == key)
    elif (key, target) in PAPER_LOSS_WEIGHTS:
        row = PAPER_LOSS_WEIGHTS[(key, target)]
    else:
        known = sorted({d for d, _ in PAPER_LOSS_WEIGHTS})
        raise ValueError(f"no paper loss weights for dataset {dataset!r} with target {target!r} "
                         f"(Table S4 covers {', '.join(known)}; ethanol/qm9 for ts_res and txc)")
    return LossWeights(*row)


class StepInputs(NamedTuple):
    """One labelled step in the transformed (p′) space, padded; a batch stacks a leading axis.

    Attributes:
      atom_numbers: ``(natm,)`` atomic numbers, 0 for padding atoms.
      coords: ``(natm, 3)`` Bohr.
      aux_atom: ``(naux,)`` atom of each density-basis function (``natm`` for padding).
      aux_slot: ``(naux,)`` its slot in the 477-slot layout.
      coeffs: ``(naux,)`` p′ = D W^{1/2} p⁽ᵏ⁾.
      grad: ``(naux,)`` gradient label ∂T/∂p′ in kcal/mol per unit p′ (unprojected).
      delta: ``(naux,)`` ProjMINAO target p′* − p′⁽ᵏ⁾.
      norm: ``(naux,)`` w′ = D W^{-1/2} w (the normalisation vector transformed like a gradient).
      energy: ``()`` label T⁽ᵏ⁾ in kcal/mol.
      weight: ``()`` 1 for a real step, 0 for a padding row of a batch.
      response_dp: ``(M, naux)`` curvature directions δp′ (``None`` or M = 0: none).
      response_hvp: ``(M, naux)`` their Hessian-vector labels ∇²T δp′ in kcal/mol.
      label_weight: ``()`` 1 for a labelled step, 0 for a visited density (no energy/gradient
        label: only the Δp and bound terms); ``None``: 1.
      bounds: ``(3,)`` constants k_var, k_desc, k_conv (kcal/mol) of :class:`VisitedBounds` at a
        visited density, NaN where a bound does not apply (every labelled step); ``None``: none.
    """

    atom_numbers: Int[Array, "natm"]
    coords: Float[Array, "natm 3"]
    aux_atom: Int[Array, "naux"]
    aux_slot: Int[Array, "naux"]
    coeffs: Float[Array, "naux"]
    grad: Float[Array, "naux"]
    delta: Float[Array, "naux"]
    norm: Float[Array, "naux"]
    energy: Float[Array, ""]
    weight: Float[Array, ""]
    response_dp: Optional[Float[Array, "m naux"]] = None
    response_hvp: Optional[Float[Array, "m naux"]] = None
    label_weight: Optional[Float[Array, ""]] = None
    bounds: Optional[Float[Array, "3"]] = None


class StepLosses(NamedTuple):
    """Per-step loss terms (unweighted) and diagnostics."""

    energy: Float[Array, ""]         # |T_θ − T|, kcal/mol
    grad: Float[Array, ""]           # ‖P̃(∇̃T_θ − ∇̃T)‖
    delta: Float[Array, ""]          # ‖Δp̃_θ − std(p* − p)‖
    energy_error: Float[Array, ""]   # T_θ − T, kcal/mol (signed)
    hvp: Float[Array, ""] = 0.0      # mean relative error of ∇²T_θ δp′ (0 without labels)
    curv: Float[Array, ""] = 0.0     # mean |δp′ᵀ∇²T_θ δp′ − δp′ᵀr′|, kcal/mol
    bound: Float[Array, "3"] = None  # hinge violations of the visited bounds, kcal/mol (3,)


def safe_norm(x: Float[Array, "..."], kind: str = "l2") -> Float[Array, ""]:
    """‖x‖₂ (``"l2"``) or Σ|x| (``"l1"``) over all entries, with a finite gradient at x = 0."""
    if kind == "l1":
        return jnp.sum(jnp.abs(x))
    if kind != "l2":
        raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
    sq = jnp.sum(x * x)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def project_out(vec: Float[Array, "n"], direction: Float[Array, "n"]) -> Float[Array, "n"]:
    """v − d (dᵀv)/(dᵀd): the component of ``vec`` orthogonal to ``direction`` (d ≠ 0)."""
    return vec - direction * (jnp.dot(direction, vec) / jnp.dot(direction, direction))


def slot_geometry(aux_atom: Int[Array, "naux"], aux_slot: Int[Array, "naux"],
                  natm: int) -> AdapterGeometry:
    """The part of an :class:`AdapterGeometry` the slot scatter/gather needs (no rotation, no
    reparametrisation: the inputs are already in p′ space)."""
    return AdapterGeometry(aux_atom=aux_atom, aux_slot=aux_slot, rot_index=None, rot_weight=None,
                           overlap_vecs=None, overlap_sqrt_vals=None,
                           fallback=jnp.zeros(natm, dtype=bool))


def has_response_labels(step: StepInputs) -> bool:
    """Whether a step (or batch) carries curvature labels (static: from the shapes)."""
    return step.response_dp is not None and step.response_dp.shape[-2] > 0


def step_losses(functional, step: StepInputs, *, key=None, inference: bool = True,
                norm: str = "l2", with_delta: bool = True, with_hvp: bool = False
                ) -> StepLosses:
    """The three loss terms of one labelled step (spec §3.3; see module docstring).

    Args:
      functional: a :class:`~mofdft_jax.model.functional.LearnedFunctional`.
      step: one :class:`StepInputs` (no batch axis).
      key, inference: dropout control (training: ``inference=False`` and a key).
      norm: ``"l2"`` or ``"l1"`` for the gradient and Δp terms.
      with_delta: evaluate the Δp head (else the Δp term is 0).
      with_hvp: evaluate the curvature term (needs curvature labels; else it is 0).
    """
    natm = step.atom_numbers.shape[0]
    geometry = slot_geometry(step.aux_atom, step.aux_slot, natm)
    slots = scatter_to_slots(step.coeffs, geometry)

    def energy_fn(s):
        return functional.apply_slots(s, step.atom_numbers, step.coords, key=key,
                                      inference=inference, with_delta=with_delta)

    (energy, delta_pred), grad_slots = jax.value_and_grad(energy_fn, has_aux=True)(slots)
    stats = jax.lax.stop_gradient(functional.statistics)
    # rescaled space: ∇_{p̃} = ∇_{p′}/λ, and w̃ = w′/λ (padding functions: w′ = 0, residual 0)
    lam = stats.scale[step.aux_slot]
    residual = (gather_from_slots(grad_slots, geometry) - step.grad) / lam
    w_tilde = step.norm / lam
    grad_loss = safe_norm(project_out(residual, w_tilde), norm)

    if with_delta:
        target = standardise_delta(scatter_to_slots(step.delta, geometry), step.atom_numbers, stats)
        mask = slot_mask(step.atom_numbers)
        delta_loss = safe_norm(jnp.where(mask, delta_pred - target, 0.0), norm)
    else:
        delta_loss = jnp.zeros((), dtype=energy.dtype)
    error = energy - step.energy
    if step.bounds is not None:
        # ∇T_θᵀ(p_v − p*) in p′ space: the gradient in kcal/mol per unit p′, δ′ = −Δ′
        grad_dot_delta = -jnp.dot(gather_from_slots(grad_slots, geometry), step.delta)
        bound = applicable_bound_violations(energy, grad_dot_delta, step.bounds)
    else:
        bound = jnp.zeros(3, dtype=energy.dtype)
    if with_hvp and has_response_labels(step):
        def grad_slots_fn(s):
            return jax.grad(lambda q: energy_fn(q)[0])(s)

        def errors(dp, hvp_label):
            _, hvp_slots = jax.jvp(grad_slots_fn, (slots,), (scatter_to_slots(dp, geometry),))
            hvp_model = gather_from_slots(hvp_slots, geometry)
            label = project_out(hvp_label / lam, w_tilde)
            res = project_out((hvp_model - hvp_label) / lam, w_tilde)
            relative = safe_norm(res, norm) / jnp.maximum(safe_norm(label, norm), 1e-30)
            return relative, jnp.abs(jnp.dot(dp, hvp_model) - jnp.dot(dp, hvp_label))

        relative, quadratic = jax.vmap(errors)(step.response_dp, step.response_hvp)
        hvp_loss, curv_loss = jnp.mean(relative), jnp.mean(quadratic)
    else:
        hvp_loss = curv_loss = jnp.zeros((), dtype=energy.dtype)
    return StepLosses(energy=jnp.abs(error), grad=grad_loss, delta=delta_loss, energy_error=error,
                      hvp=hvp_loss, curv=curv_loss, bound=bound)


def batch_loss(functional, batch: StepInputs, weights: LossWeights, *, key=None,
               inference: bool = True, norm: str = "l2"):
    """Weighted mean of the per-step losses over the real rows of a padded batch.

    Args:
      functional: the learned functional.
      batch: :class:`StepInputs` with a leading batch axis ``B``.
      weights: ξ_eng, ξ_grad, ξ_den. A zero ξ_den skips the Δp head; a zero ξ_grad still computes
        the gradient term for monitoring (it does not enter the loss).
      key: dropout key (split per row) when ``inference`` is False.

    Rows with ``label_weight`` 0 (visited densities) enter only through the Δp term and the hinge
    violations of their bounds (weight ξ_bound, the sum of the three violations in kcal/mol).

    Returns:
      ``(loss, sums)``: the scalar loss Σ_b w_b L_b / Σ_b w_b and a dict of the batch sums
      ``n`` (real rows), ``n_labelled``, ``n_bounded`` (rows with bounds), ``energy_abs``,
      ``energy_sq``, ``grad``, ``hvp``, ``curv`` (labelled rows), ``delta``, ``bound_var``,
      ``bound_desc``, ``bound_conv``, ``loss`` for metrics.
    """
    nbatch = batch.weight.shape[0]
    keys = (jax.random.split(key, nbatch) if key is not None
            else jnp.zeros((nbatch, 2), dtype=jnp.uint32))
    with_delta = weights.delta != 0.0
    with_hvp = (weights.hvp != 0.0 or weights.curv != 0.0) and has_response_labels(batch)

    def one(step, k):
        return step_losses(functional, step, key=None if key is None else k, inference=inference,
                           norm=norm, with_delta=with_delta, with_hvp=with_hvp)

    per = jax.vmap(one)(batch, keys)
    w = batch.weight
    labelled = w if batch.label_weight is None else w * batch.label_weight
    bounded = (jnp.zeros_like(w) if batch.bounds is None
               else w * jnp.any(jnp.isfinite(batch.bounds), axis=-1))
    total = (labelled * (weights.energy * per.energy + weights.grad * per.grad
                         + weights.hvp * per.hvp + weights.curv * per.curv)
             + w * weights.delta * per.delta + w * weights.bound * jnp.sum(per.bound, axis=-1))
    n = jnp.sum(w)
    loss = jnp.sum(total) / jnp.maximum(n, 1.0)
    sums = {"n": n, "n_labelled": jnp.sum(labelled), "n_bounded": jnp.sum(bounded),
            "loss": jnp.sum(total), "energy_abs": jnp.sum(labelled * per.energy),
            "energy_sq": jnp.sum(labelled * per.energy_error ** 2),
            "grad": jnp.sum(labelled * per.grad), "delta": jnp.sum(w * per.delta),
            "hvp": jnp.sum(labelled * per.hvp), "curv": jnp.sum(labelled * per.curv),
            "bound_var": jnp.sum(w * per.bound[:, 0]), "bound_desc": jnp.sum(w * per.bound[:, 1]),
            "bound_conv": jnp.sum(w * per.bound[:, 2])}
    return loss, sums


# ---------------------------------------------------------------------------------------------
# label-free bounds at densities the solver visits (issue 19, adaptive sampling)
# ---------------------------------------------------------------------------------------------

class VisitedBounds(NamedTuple):
    """Constants (kcal/mol) of the three label-free inequalities at a visited density p_v.

    With δ = p_v − p*, the learned part T_θ, the θ-independent rest E_rest (everything the solver
    adds to T_θ: T_APBE, Hartree, XC, external for ``ts_res``) and its kinetic part T_base
    (T_APBE for ``ts_res``, 0 otherwise), T* the energy label at p* (the target's value) and
    T_S* = T* + T_base(p*):

    * ``variational``  k_var = T* + E_rest(p*) − E_rest(p_v): the variational principle
      E(p_v) ≥ E(p*) reads T_θ(p_v) ≥ k_var;
    * ``descent``      k_desc = ∇E_rest(p_v)ᵀδ: −∇E(p_v) points toward p*, ∇T_θ(p_v)ᵀδ + k_desc ≥ 0;
    * ``convexity``    k_conv = T_base(p_v) − T_S* − ∇T_base(p_v)ᵀδ: T_S is convex in the density
      (and the density is linear in p), so T_S(p_v) − T_S* ≤ ∇T_S(p_v)ᵀδ, i.e.
      T_θ(p_v) − ∇T_θ(p_v)ᵀδ + k_conv ≤ 0.

    None of them needs a KS calculation at p_v: they hold for the exact functional at *any*
    density, so they can be imposed at the densities a minimisation with the current model visits
    (the spurious valleys of issue 19), where no label exists.
    """

    variational: Float[Array, "..."]
    descent: Float[Array, "..."]
    convexity: Float[Array, "..."]


def make_visited_bounds(*, label_star, rest_star, rest_visited, grad_rest_visited,
                        base_star, base_visited, grad_base_visited, coeffs_visited,
                        coeffs_star) -> VisitedBounds:
    """The :class:`VisitedBounds` of one visited density from host-side evaluations (Hartree in,
    kcal/mol out; see :class:`VisitedBounds` for the formulas).

    Args:
      label_star: T* (the target label at p*), Ha.
      rest_star, rest_visited: E_rest(p*), E_rest(p_v), Ha.
      grad_rest_visited: ``(naux,)`` ∇E_rest(p_v).
      base_star, base_visited: T_base(p*), T_base(p_v), Ha; grad_base_visited: ``(naux,)``.
      coeffs_visited, coeffs_star: ``(naux,)`` p_v and p* (raw basis; the pairing ∇ᵀδ is the same
        in the network's p′ space).
    """
    delta = jnp.asarray(coeffs_visited) - jnp.asarray(coeffs_star)
    t_s_star = label_star + base_star
    return VisitedBounds(
        variational=HARTREE_TO_KCAL * (label_star + rest_star - rest_visited),
        descent=HARTREE_TO_KCAL * jnp.dot(jnp.asarray(grad_rest_visited), delta),
        convexity=HARTREE_TO_KCAL * (base_visited - t_s_star
                                     - jnp.dot(jnp.asarray(grad_base_visited), delta)))


def visited_bound_violations(energy: Float[Array, ""], grad_dot_delta: Float[Array, ""],
                             bounds: VisitedBounds) -> Float[Array, "3"]:
    """Hinge violations (kcal/mol, ≥ 0) of the three inequalities of :class:`VisitedBounds`.

    Args:
      energy: T_θ(p_v), kcal/mol.
      grad_dot_delta: ∇T_θ(p_v)ᵀ(p_v − p*), kcal/mol (any coefficient space: the pairing of a
        gradient with a coefficient difference is invariant under p′ = D W^{1/2} p).
      bounds: the constants of this density.

    Returns:
      ``[max(0, k_var − T_θ), max(0, −(∇T_θᵀδ + k_desc)), max(0, T_θ − ∇T_θᵀδ + k_conv)]``.
    """
    return jnp.stack([jax.nn.relu(bounds.variational - energy),
                      jax.nn.relu(-(grad_dot_delta + bounds.descent)),
                      jax.nn.relu(energy - grad_dot_delta + bounds.convexity)])


def applicable_bound_violations(energy: Float[Array, ""], grad_dot_delta: Float[Array, ""],
                                bounds: Float[Array, "3"]) -> Float[Array, "3"]:
    """:func:`visited_bound_violations` for a ``(3,)`` array of constants [k_var, k_desc, k_conv]
    (kcal/mol) in which NaN marks a bound that does not apply (it is violated by 0)."""
    applies = jnp.isfinite(bounds)
    violations = visited_bound_violations(energy, grad_dot_delta,
                                          VisitedBounds(*jnp.where(applies, bounds, 0.0)))
    return jnp.where(applies, violations, 0.0)

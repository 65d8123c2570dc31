"""Training losses (spec §3.3): the projected gradient loss in the rescaled space, self-consistent
labels give zero loss, ablation weights, Table S4 defaults."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_test_config

from mofdft_jax.density.adapter import (gather_from_slots, identity_statistics, scatter_to_slots,
                                        slot_mask)
from mofdft_jax.model.functional import make_learned_functional
from mofdft_jax.train.losses import (LossWeights, StepInputs, batch_loss, paper_loss_weights,
                                     project_out, safe_norm, slot_geometry, step_losses)

Z = np.array([8, 1, 1, 0])  # water plus one padding atom
NAUX = 20 + 20 + 116 + 6  # two H blocks, the O block, 6 padding functions


def _step(rng, scale=1.0) -> StepInputs:
    """A random padded water step in p′ space (function order: O, H, H, padding)."""
    aux_atom = np.concatenate([np.zeros(116), np.ones(20), np.full(20, 2), np.full(6, 4)])
    aux_slot = np.concatenate([245 + np.arange(116), np.arange(20), np.arange(20), np.zeros(6)])
    real = aux_atom < 3
    coeffs = rng.normal(size=NAUX) * real
    norm = np.abs(rng.normal(size=NAUX)) * real
    return StepInputs(atom_numbers=jnp.asarray(Z), coords=jnp.asarray(rng.normal(size=(4, 3))),
                      aux_atom=jnp.asarray(aux_atom, jnp.int32),
                      aux_slot=jnp.asarray(aux_slot, jnp.int32), coeffs=jnp.asarray(coeffs),
                      grad=jnp.asarray(rng.normal(size=NAUX) * real * scale),
                      delta=jnp.asarray(rng.normal(size=NAUX) * real), norm=jnp.asarray(norm),
                      energy=jnp.asarray(3.0), weight=jnp.asarray(1.0))


@pytest.fixture(scope="module")
def functional():
    stats = identity_statistics()._replace(scale=jnp.full(477, 2.5))
    return make_learned_functional(make_test_config(), stats, "ts_res", key=jax.random.PRNGKey(3))


_losses = jax.jit(lambda f, s: step_losses(f, s))


def test_paper_loss_weights_table_s4():
    assert paper_loss_weights("ethanol", "ts_res") == LossWeights(1.0, 0.1, 0.08)
    assert paper_loss_weights("Ethanol", "txc") == LossWeights(1.0, 0.03, 1.0)
    assert paper_loss_weights("qm9", "ts_res") == LossWeights(1.0, 0.12, 0.005)
    assert paper_loss_weights("qm9", "txc") == LossWeights(1.0, 0.12, 0.05)
    assert paper_loss_weights("qmugs", "txc") == LossWeights(1.0, 0.1, 1.0)
    assert paper_loss_weights("chignolin", "tot") == LossWeights(1.0, 0.1, 1.0)
    with pytest.raises(ValueError, match="no paper loss weights"):
        paper_loss_weights("md22", "ts_res")


def test_safe_norm_is_differentiable_at_zero():
    g = jax.grad(lambda x: safe_norm(x))(jnp.zeros(4))
    assert np.all(np.isfinite(np.asarray(g)))
    assert float(safe_norm(jnp.array([3.0, -4.0]))) == 5.0
    assert float(safe_norm(jnp.array([3.0, -4.0]), "l1")) == 7.0


def test_self_consistent_labels_give_zero_loss(functional, rng):
    """Labels made from the model itself (its energy, its p′ gradient, its Δp) give zero loss."""
    step = _step(rng)
    geometry = slot_geometry(step.aux_atom, step.aux_slot, 4)
    slots = scatter_to_slots(step.coeffs, geometry)

    def energy(s):
        return functional.apply_slots(s, step.atom_numbers, step.coords, with_delta=True)

    (e, delta), g = jax.value_and_grad(energy, has_aux=True)(slots)
    delta = jnp.where(slot_mask(step.atom_numbers), delta, 0.0)  # identity Δ statistics
    exact = step._replace(energy=e, grad=gather_from_slots(g, geometry),
                          delta=gather_from_slots(delta, geometry))
    out = _losses(functional, exact)
    assert float(out.energy) < 1e-12  # jit vs eager rounding only
    assert float(out.grad) < 1e-12
    assert float(out.delta) < 1e-12
    # a wrong label gives a positive loss
    assert float(_losses(functional, step).grad) > 1e-3


def test_gradient_loss_ignores_the_normalisation_direction(functional, rng):
    """The label is exact only up to μw (spec §1.7); w′ transformed like a gradient and rescaled by
    1/λ is projected out in the rescaled space, so adding μw′ to the label changes nothing."""
    step = _step(rng)
    base = float(_losses(functional, step).grad)
    for mu in (-7.5, 0.3, 120.0):
        shifted = float(_losses(functional, step._replace(grad=step.grad + mu * step.norm)).grad)
        assert shifted == pytest.approx(base, rel=1e-10)
    # any other direction does change it
    other = step._replace(grad=step.grad + 0.3 * jnp.roll(step.norm, 1))
    assert abs(float(_losses(functional, other).grad) - base) > 1e-6


def test_gradient_loss_is_taken_in_the_rescaled_space(functional, rng):
    """loss = ‖P̃ (∇T_θ − ∇T)/λ‖ with P̃ the projector orthogonal to w′/λ (λ = 2.5 here)."""
    step = _step(rng)
    geometry = slot_geometry(step.aux_atom, step.aux_slot, 4)
    slots = scatter_to_slots(step.coeffs, geometry)
    g = jax.grad(lambda s: functional.apply_slots(s, step.atom_numbers, step.coords)[0])(slots)
    residual = (gather_from_slots(g, geometry) - step.grad) / 2.5
    expected = np.linalg.norm(np.asarray(project_out(residual, step.norm / 2.5)))
    assert float(_losses(functional, step).grad) == pytest.approx(expected, rel=1e-12)
    l1 = float(step_losses(functional, step, norm="l1").grad)
    assert l1 == pytest.approx(np.abs(np.asarray(project_out(residual, step.norm / 2.5))).sum(),
                               rel=1e-12)


def test_batch_loss_weights_and_padding_rows(functional, rng):
    """Padding rows (weight 0) do not count; ξ_grad = 0 (the no-gradient-label ablation) removes
    exactly the gradient term; ξ_den = 0 skips the Δp head."""
    steps = [_step(rng), _step(rng)]
    batch = jax.tree.map(lambda *x: jnp.stack(x), *steps)
    batch = batch._replace(weight=jnp.array([1.0, 0.0]))
    per = _losses(functional, steps[0])
    w = LossWeights(1.0, 0.1, 0.08)
    loss, sums = batch_loss(functional, batch, w)
    assert float(sums["n"]) == 1.0
    assert float(loss) == pytest.approx(float(per.energy + 0.1 * per.grad + 0.08 * per.delta),
                                        rel=1e-12)
    loss_nograd, _ = batch_loss(functional, batch, dataclasses.replace(w, grad=0.0))
    assert float(loss_nograd) == pytest.approx(float(per.energy + 0.08 * per.delta), rel=1e-12)
    loss_nodelta, sums_nodelta = batch_loss(functional, batch, dataclasses.replace(w, delta=0.0))
    assert float(sums_nodelta["delta"]) == 0.0
    assert float(loss_nodelta) == pytest.approx(float(per.energy + 0.1 * per.grad), rel=1e-12)


def test_curvature_loss_vanishes_on_the_models_own_hessian_and_trains(functional, rng):
    """Curvature labels made from the model's own Hessian-vector products give zero curvature
    loss (up to the μ w' freedom, which is projected out); other labels do not, and the loss has
    a finite parameter gradient."""
    step = _step(rng)
    geometry = slot_geometry(step.aux_atom, step.aux_slot, 4)
    slots = scatter_to_slots(step.coeffs, geometry)
    real = np.asarray(step.aux_atom) < 3
    dps = jnp.asarray(rng.normal(size=(2, NAUX)) * real)
    # response directions keep the electron count: w′ᵀδp′ = wᵀδp = 0
    dps = jax.vmap(lambda d: project_out(d, step.norm))(dps)

    def grad_fn(s):
        return jax.grad(lambda q: functional.apply_slots(q, step.atom_numbers, step.coords)[0])(s)

    hvps = jnp.stack([gather_from_slots(jax.jvp(grad_fn, (slots,),
                                                (scatter_to_slots(d, geometry),))[1], geometry)
                      for d in dps])
    own = step._replace(response_dp=dps, response_hvp=hvps + 0.7 * step.norm[None])
    loss = jax.jit(lambda f, s: step_losses(f, s, with_hvp=True))(functional, own)
    assert float(loss.hvp) < 1e-10 and float(loss.curv) < 1e-8
    other = own._replace(response_hvp=-hvps)  # curvature of the opposite sign: relative error 2
    loss = jax.jit(lambda f, s: step_losses(f, s, with_hvp=True))(functional, other)
    assert float(loss.hvp) == pytest.approx(2.0, rel=1e-6)
    quadratic = np.abs(2 * np.einsum("mn,mn->m", np.asarray(dps), np.asarray(hvps))).mean()
    assert float(loss.curv) == pytest.approx(quadratic, rel=1e-8) and quadratic > 0
    batch = jax.tree.map(lambda x: None if x is None else jnp.stack([x, x]), other)
    weights = LossWeights(1.0, 0.1, 0.0, hvp=1.0, curv=0.1)
    grads = eqx.filter_grad(lambda f: batch_loss(f, batch, weights)[0])(functional)
    leaves = [np.asarray(x) for x in jax.tree.leaves(grads) if hasattr(x, "dtype")]
    assert all(np.all(np.isfinite(x)) for x in leaves) and any(np.abs(x).max() > 0 for x in leaves)
    # without curvature labels the term is 0 and not evaluated
    assert float(step_losses(functional, step, with_hvp=True).hvp) == 0.0

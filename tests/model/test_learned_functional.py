"""Learned functional (spec §2–§3) on real PySCF densities: invariances, gradients, ProjMINAO Δp,
float32 option, element checks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mofdft_jax.density import adapter as ad
from mofdft_jax.model.functional import (TARGETS, LearnedFunctional, UnseenElementError,
                                         make_learned_functional)
from mofdft_jax.model.graphormer import Graphormer3D, make_config
from mofdft_jax.units import HARTREE_TO_KCAL
from pyscf_systems import ETHANOL, FLUOROMETHANE, make_system, random_rotation


@eqx.filter_jit
def _energy(functional, coeffs, bundle, geometry):
    return functional.energy(coeffs, bundle, geometry)


@eqx.filter_jit
def _energy_and_grad(functional, coeffs, bundle, geometry):
    return jax.value_and_grad(functional.energy)(coeffs, bundle, geometry)


@eqx.filter_jit
def _delta(functional, coeffs, bundle, geometry):
    return functional.delta_coeffs(coeffs, bundle, geometry)


@eqx.filter_jit
def _by_hand(functional, coeffs, bundle, geometry):
    """Energy parts and Δp′ recomputed step by step from the adapter and the network."""
    stats = functional.statistics
    slots = ad.coeffs_to_slots(coeffs, geometry)
    net_in = ad.standardise_coeffs(slots, bundle.atom_numbers, stats)
    out = functional.model(bundle.atom_numbers, bundle.coords, net_in, with_delta=True)
    ref = ad.atomref_energy(slots, bundle.atom_numbers, stats)
    delta_prime = ad.unstandardise_delta(out.delta, bundle.atom_numbers, stats)
    return out.energy, ref, ad.slots_to_coeffs(delta_prime, geometry)


@pytest.fixture(scope="module")
def systems():
    """Ethanol, rotated + translated, and permuted; integrals and MINAO p recomputed each time."""
    rng = np.random.default_rng(7)
    z, x = ETHANOL
    perm = rng.permutation(len(z))
    return {
        "ref": make_system(z, x),
        "moved": make_system(z, x, rotation=random_rotation(rng), shift=[2.0, -1.0, 0.4]),
        "permuted": make_system(z[perm], x[perm]),
    }


@pytest.fixture(scope="module")
def statistics(systems):
    """Non-trivial statistics (λ ≠ 1, ḡ ≠ 0, offsets, Δ mean/std) from synthetic labels."""
    rng = np.random.default_rng(3)
    bundle, coeffs = systems["ref"]
    geom = ad.build_adapter_geometry(bundle)
    p = coeffs[None] + 0.02 * rng.normal(size=(6, len(coeffs)))
    sample = ad.LabelledGeometry(atom_numbers=np.asarray(bundle.atom_numbers), geometry=geom,
                                 coeffs=p, grads=0.3 * rng.normal(size=p.shape),
                                 energies=-5.0 + 0.01 * rng.normal(size=6), ground_coeffs=coeffs)
    stats = ad.compute_statistics([sample])
    assert float(jnp.max(stats.scale)) > 1.0 and float(jnp.abs(stats.grad_mean).max()) > 1.0
    return stats


@pytest.fixture(scope="module")
def functional(statistics):
    return make_learned_functional(make_config("tiny"), statistics, "ts_res",
                                   key=jax.random.PRNGKey(11))


def _evaluate(functional, system):
    bundle, coeffs = system
    geom = functional.prepare(bundle)
    return float(_energy(functional, jnp.asarray(coeffs), bundle, geom))


def test_energy_is_invariant_under_rotation_translation_and_permutation(functional, systems):
    e_ref = _evaluate(functional, systems["ref"])
    for name in ("moved", "permuted"):
        e = _evaluate(functional, systems[name])
        assert abs(e - e_ref) < 1e-8 * abs(e_ref), name
    # the network part alone is invariant too (the AtomRef constant does not hide a difference)
    no_ref = LearnedFunctional(model=functional.model, statistics=functional.statistics._replace(
        global_offset=jnp.zeros(()), grad_mean=jnp.zeros(477)), target="ts_res")
    n0, n1 = _evaluate(no_ref, systems["ref"]), _evaluate(no_ref, systems["moved"])
    assert abs(n1 - n0) < 1e-8 * abs(n0)
    # with local frames off the energy is NOT invariant: the check above can fail
    frameless = LearnedFunctional(model=functional.model, statistics=functional.statistics,
                                  target="ts_res", use_local_frames=False)
    f0, f1 = _evaluate(frameless, systems["ref"]), _evaluate(frameless, systems["moved"])
    assert abs(f1 - f0) > 1e-6 * abs(n0)


def test_energy_is_network_plus_atomref_in_hartree(functional, systems):
    bundle, coeffs = systems["ref"]
    geom = functional.prepare(bundle)
    net, ref, _ = _by_hand(functional, jnp.asarray(coeffs), bundle, geom)
    e = float(_energy(functional, jnp.asarray(coeffs), bundle, geom))
    assert abs(e - float(net + ref) / 627.5094740630558) < 1e-12 * abs(e)
    assert HARTREE_TO_KCAL == 627.5094740630558
    assert set(TARGETS) == {"ts_res", "txc", "tot"}


def test_gradient_wrt_raw_coefficients_matches_finite_differences(functional, systems):
    bundle, coeffs = systems["ref"]
    geom = functional.prepare(bundle)
    c = jnp.asarray(coeffs)
    _, grad = _energy_and_grad(functional, c, bundle, geom)
    rng = np.random.default_rng(5)
    for _ in range(3):
        v = jnp.asarray(rng.normal(size=coeffs.shape))
        h = 1e-5
        fd = (float(_energy(functional, c + h * v, bundle, geom))
              - float(_energy(functional, c - h * v, bundle, geom))) / (2 * h)
        an = float(grad @ v)
        assert abs(fd - an) < 1e-6 * abs(an)


def test_projminao_delta_conserves_electrons_and_rotates_with_the_molecule(functional, systems):
    deltas = {}
    for name in ("ref", "moved"):
        bundle, coeffs = systems[name]
        geom = functional.prepare(bundle)
        delta = _delta(functional, jnp.asarray(coeffs), bundle, geom)
        w = bundle.norm
        assert abs(float(delta @ w)) < 1e-12 * float(jnp.abs(delta).max() * jnp.abs(w).sum())
        deltas[name] = (delta, geom)
    # the correction density is the same in every atom's local frame
    to_slots = jax.jit(ad.coeffs_to_slots)
    s0 = to_slots(*deltas["ref"])
    s1 = to_slots(*deltas["moved"])
    assert float(jnp.abs(s0).max()) > 0
    assert float(jnp.abs(s1 - s0).max()) < 1e-8 * float(jnp.abs(s0).max())


def test_projminao_delta_is_the_unstandardised_head_mapped_back(functional, systems):
    """Before projection, Δp′ = head · std + mean, i.e. p + Δp has p′ shifted by exactly that."""
    bundle, coeffs = systems["ref"]
    geom = functional.prepare(bundle)
    c = jnp.asarray(coeffs)
    _, _, raw = _by_hand(functional, c, bundle, geom)
    delta = _delta(functional, c, bundle, geom)
    w = bundle.norm
    # undo the projection along w: Δp = Δp_raw - α w, α = wᵀΔp_raw / wᵀw
    alpha = float(raw @ w / (w @ w))
    assert float(jnp.abs(delta + alpha * w - raw).max()) < 1e-10 * float(jnp.abs(raw).max())


def test_float32_network_keeps_float64_energies(functional, systems):
    bundle, coeffs = systems["ref"]
    model32 = Graphormer3D(make_config("tiny", compute_dtype="float32"), key=jax.random.PRNGKey(11))
    f32 = LearnedFunctional(model=model32, statistics=functional.statistics, target="ts_res")
    geom = functional.prepare(bundle)
    e64 = _energy(functional, jnp.asarray(coeffs), bundle, geom)
    e32, g32 = _energy_and_grad(f32, jnp.asarray(coeffs), bundle, geom)
    assert e32.dtype == jnp.float64 and g32.dtype == jnp.float64
    # the network runs in float32 (~1e-7 relative of its O(1) kcal/mol output), AtomRef in float64
    assert 0.0 < abs(float(e32 - e64)) * HARTREE_TO_KCAL < 1e-4

    # the solver's inputs carry the network's weights already in float32 (cast once per molecule,
    # not per step), the statistics stay float64, and the solver energy is the same to rounding
    from mofdft_jax.solver.learned import make_learned_inputs, split_learned_functional

    inputs = make_learned_inputs(f32, bundle, geom)
    weights = [x for x in jax.tree.leaves(inputs.params.model) if jnp.issubdtype(x.dtype,
                                                                                 jnp.floating)]
    assert weights and all(x.dtype == jnp.float32 for x in weights)
    assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(inputs.params.statistics)
               if jnp.issubdtype(x.dtype, jnp.floating))
    _, static = split_learned_functional(f32)
    solver_e = eqx.combine(inputs.params, static).energy(jnp.asarray(coeffs), bundle, geom)
    assert solver_e.dtype == jnp.float64
    assert abs(float(solver_e - e32)) <= 1e-6 * max(abs(float(e32)), 1e-3)


@eqx.filter_jit
def _terms_value_and_grad(energy_terms_fn, coeffs, inputs):
    return jax.value_and_grad(lambda q: sum(energy_terms_fn(q, inputs).values()))(coeffs)


@pytest.mark.parametrize("compute_dtype", ["float64", "float32"])
def test_precomputed_geometry_features_are_used_and_change_nothing(functional, systems,
                                                                  compute_dtype):
    """The solver's inputs carry the network's geometry features (attention bias, geometric node
    features) computed once; the energy and its gradient equal the ones that rebuild them in
    every call, and the features are really read (another geometry's features change the
    energy)."""
    from mofdft_jax.solver.learned import make_learned_energy_fn, make_learned_inputs

    model = Graphormer3D(make_config("tiny", compute_dtype=compute_dtype),
                         key=jax.random.PRNGKey(5))
    learned = LearnedFunctional(model=model, statistics=functional.statistics, target="txc")
    bundle, coeffs = systems["ref"]
    coeffs = jnp.asarray(coeffs)
    inputs = make_learned_inputs(learned, bundle)
    dtype = jnp.float32 if compute_dtype == "float32" else jnp.float64
    natm = len(bundle.atom_numbers)
    assert inputs.features.node.shape == (natm, model.config.hidden)
    assert inputs.features.attn_bias.shape == (model.config.num_heads, natm, natm)
    assert inputs.features.node.dtype == dtype and inputs.features.attn_bias.dtype == dtype

    energy_terms_fn = make_learned_energy_fn(learned)
    e_cached, g_cached = _terms_value_and_grad(energy_terms_fn, coeffs, inputs)
    e_fresh, g_fresh = _terms_value_and_grad(energy_terms_fn, coeffs,
                                             inputs._replace(features=None))
    print(compute_dtype, "energy difference (Ha):", float(e_cached - e_fresh),
          "largest gradient difference:", float(jnp.abs(g_cached - g_fresh).max()))
    # the network's output is O(1) kcal/mol: float32 rounding is ~1e-7 kcal/mol ~ 1e-10 Ha
    tol_ha = 1e-12 * abs(float(e_fresh)) if compute_dtype == "float64" else 1e-9
    assert abs(float(e_cached - e_fresh)) <= tol_ha
    assert float(jnp.abs(g_cached - g_fresh).max()) <= tol_ha * 10

    # features of the permuted molecule's nuclei do not belong to this atom order
    other = make_learned_inputs(learned, systems["permuted"][0])
    e_wrong, _ = _terms_value_and_grad(energy_terms_fn, coeffs,
                                       inputs._replace(features=other.features))
    print("energy with another geometry's features: difference", float(e_wrong - e_fresh))
    assert abs(float(e_wrong - e_fresh)) > 1e-6


def test_unseen_and_unsupported_elements_are_refused(functional, statistics):
    bundle, _ = make_system(*FLUOROMETHANE)
    with pytest.raises(UnseenElementError,
                       match=r"atom 1: element F never appeared .*\(trained on H, C, O\)"):
        functional.prepare(bundle)
    with pytest.raises(UnseenElementError, match="Z=16 is not supported"):
        functional.check_elements(np.array([6, 16, 1]))
    with pytest.raises(ValueError, match="unknown target"):
        LearnedFunctional(model=functional.model, statistics=statistics, target="ts")


def test_geometry_must_match_the_functional_switches(functional, systems):
    bundle, coeffs = systems["ref"]
    geom = ad.build_adapter_geometry(bundle, use_local_frames=False)
    with pytest.raises(ValueError, match="local frames off"):
        functional.energy(jnp.asarray(coeffs), bundle, geom)

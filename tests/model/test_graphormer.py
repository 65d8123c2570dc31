"""Graphormer-3D (spec §3.1–3.2): size, invariances, padding, dropout, float32, gradients."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mofdft_jax.density.adapter import slot_mask
from mofdft_jax.model.graphormer import (CONFIGS, Graphormer3D, GraphormerConfig, biased_attention,
                                         count_parameters, make_config, unrolled_blocks)

Z = np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])


def _inputs(rng, z=Z):
    coords = rng.normal(size=(len(z), 3)) * 2.0
    coeffs = rng.normal(size=(len(z), 477)) * 3.0 * np.asarray(slot_mask(jnp.asarray(z)))
    return jnp.asarray(z), jnp.asarray(coords), jnp.asarray(coeffs)


@pytest.fixture(scope="module")
def model():
    return Graphormer3D(make_config("tiny"), key=jax.random.PRNGKey(0))


@eqx.filter_jit
def _run(model, z, x, c):
    return model(z, x, c, with_delta=True)


@eqx.filter_jit
def _energy_and_grad(model, z, x, c):
    return jax.value_and_grad(lambda cc: model(z, x, cc).energy)(c)


def test_paper_config_parameter_count():
    """12 × 768, 32 heads, 128 kernels, 477 slots: 45.25 M (spec §3.2: ≈45.2 M without the unused
    ground-energy head, 45.8 M with it; that head is 768·768+768 + 768+1 = 590,593 scalars)."""
    n = count_parameters(CONFIGS["paper"])
    print(f"paper config: {n:,} parameters")
    assert n == 45_245_752
    assert abs(n + 590_593 - 45.8e6) < 0.05e6
    delta_head = 768 * 768 + 768 + 768 * 477 + 477
    assert count_parameters(make_config("paper", delta_head=False)) == n - delta_head
    tiny = Graphormer3D(make_config("tiny"), key=jax.random.PRNGKey(1))
    assert count_parameters(tiny) == count_parameters(make_config("tiny"))


def test_permutation_invariance(model, rng):
    z, x, c = _inputs(rng)
    perm = rng.permutation(len(z))
    out = _run(model, z, x, c)
    outp = _run(model, z[perm], x[perm], c[perm])
    assert abs(float(outp.energy - out.energy)) < 1e-12 * abs(float(out.energy)) + 1e-13
    assert float(jnp.abs(outp.delta - out.delta[perm]).max()) < 1e-12


def test_rigid_motion_invariance_for_fixed_coefficients(model, rng):
    """Distances are the only geometric input: rotating + translating coords changes nothing."""
    z, x, c = _inputs(rng)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    x1 = x @ jnp.asarray(q).T + jnp.array([1.0, -3.0, 0.5])
    e0, e1 = _run(model, z, x, c).energy, _run(model, z, x1, c).energy
    assert abs(float(e1 - e0)) < 1e-12 * abs(float(e0)) + 1e-13


def test_padding_atoms_change_nothing_and_batches_vmap(model, rng):
    z, x, c = _inputs(rng)
    e0 = _run(model, z, x, c)
    zp = jnp.concatenate([z, jnp.zeros(3, dtype=z.dtype)])
    xp = jnp.concatenate([x, jnp.asarray(rng.normal(size=(3, 3)))])
    cp = jnp.concatenate([c, jnp.asarray(rng.normal(size=(3, 477)))])  # garbage on padding rows
    ep = _run(model, zp, xp, cp)
    assert abs(float(ep.energy - e0.energy)) < 1e-12 * abs(float(e0.energy)) + 1e-13
    assert float(jnp.abs(ep.atom_energies[9:]).max()) == 0.0
    assert float(jnp.abs(ep.delta[:9] - e0.delta).max()) < 1e-12
    # a padded batch of two different molecules equals the separate evaluations
    z2, x2, c2 = _inputs(rng, np.array([8, 1, 1]))
    zb = jnp.stack([z, jnp.concatenate([z2, jnp.zeros(6, dtype=z.dtype)])])
    xb = jnp.stack([x, jnp.concatenate([x2, jnp.zeros((6, 3))])])
    cb = jnp.stack([c, jnp.concatenate([c2, jnp.zeros((6, 477))])])
    batched = eqx.filter_jit(eqx.filter_vmap(lambda m, a, b, d: m(a, b, d).energy,
                                             in_axes=(None, 0, 0, 0)))(model, zb, xb, cb)
    e2 = _run(model, z2, x2, c2).energy
    assert np.allclose(np.asarray(batched), [float(e0.energy), float(e2)], rtol=1e-12, atol=1e-13)


def test_dropout_needs_a_key_and_is_off_in_inference(model, rng):
    z, x, c = _inputs(rng)
    with pytest.raises(ValueError, match="dropout key"):
        model(z, x, c, inference=False)
    train = eqx.filter_jit(lambda m, k: m(z, x, c, key=k, inference=False).energy)
    e1, e2 = train(model, jax.random.PRNGKey(1)), train(model, jax.random.PRNGKey(2))
    e0 = _run(model, z, x, c).energy
    assert float(e1) != float(e2) and float(e1) != float(e0)
    assert float(train(model, jax.random.PRNGKey(1))) == float(e1)  # seeded: reproducible


def test_gradient_wrt_coefficients_matches_finite_differences(model, rng):
    z, x, c = _inputs(rng)
    _, grad = _energy_and_grad(model, z, x, c)
    mask = np.asarray(slot_mask(z))
    for _ in range(3):
        v = jnp.asarray(rng.normal(size=c.shape) * mask)
        h = 1e-4
        fd = (float(_run(model, z, x, c + h * v).energy)
              - float(_run(model, z, x, c - h * v).energy)) / (2 * h)
        an = float(jnp.sum(grad * v))
        assert abs(fd - an) < 1e-7 * max(abs(an), 1e-3)


def _plain_attention(q, k, v, bias, key_mask):
    logits = jnp.einsum("had,hbd->hab", q, k) + bias
    logits = jnp.where(key_mask[None, None, :], logits, -jnp.inf)
    return jnp.einsum("hab,hbd->had", jax.nn.softmax(logits, axis=-1), v)


def test_biased_attention_vjp_matches_autodiff_of_the_plain_softmax(rng):
    """The hand-written backward of the attention equals jax.grad of the plain softmax attention
    for q, k, v and the bias, to first and second (reverse-over-reverse) order, padded keys
    masked."""
    nh, n, dh = 3, 7, 4
    q, k, v = (jnp.asarray(rng.normal(size=(nh, n, dh))) for _ in range(3))
    bias = jnp.asarray(rng.normal(size=(nh, n, n)))
    key_mask = jnp.asarray([True] * 5 + [False] * 2)
    weights = jnp.asarray(rng.normal(size=(nh, n, dh)))

    def loss(fn, q, k, v, bias):
        return jnp.sum(jnp.tanh(fn(q, k, v, bias, key_mask)) * weights)

    ours = jax.value_and_grad(lambda *a: loss(biased_attention, *a), argnums=(0, 1, 2, 3))
    plain = jax.value_and_grad(lambda *a: loss(_plain_attention, *a), argnums=(0, 1, 2, 3))
    (e1, g1), (e2, g2) = ours(q, k, v, bias), plain(q, k, v, bias)
    assert abs(float(e1 - e2)) < 1e-13 * abs(float(e2))
    for a, b in zip(g1, g2):
        assert float(jnp.abs(a - b).max()) < 1e-13 * float(jnp.abs(b).max())
    # padded keys get no gradient, and no weight in the output
    assert float(jnp.abs(g1[1][:, 5:]).max()) == 0.0 and float(jnp.abs(g1[2][:, 5:]).max()) == 0.0

    # second order, as in training with the gradient loss: d/d(bias, v) of a norm of dL/dq
    def grad_norm(fn):
        return jax.grad(lambda b, vv: jnp.sum(jax.grad(lambda qq: loss(fn, qq, k, vv, b))(q) ** 2),
                        argnums=(0, 1))(bias, v)

    for a, b in zip(grad_norm(biased_attention), grad_norm(_plain_attention)):
        assert float(jnp.abs(a - b).max()) < 1e-12 * float(jnp.abs(b).max())


def _flops(compiled):
    cost = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def test_unrolled_blocks_give_the_same_energy_and_count_every_block(rng):
    """XLA's cost analysis counts a scanned block once; under ``unrolled_blocks`` the network is
    traced unrolled (for the roofline), with the same energy and gradient."""
    model = Graphormer3D(make_config("tiny", num_layers=6), key=jax.random.PRNGKey(4))
    z, x, c = _inputs(rng)

    def value_and_grad(m, cc):
        return jax.value_and_grad(lambda q: m(z, x, q).energy)(cc)

    scanned = jax.jit(lambda m, cc: value_and_grad(m, cc)).lower(model, c).compile()
    with unrolled_blocks():
        unrolled = jax.jit(lambda m, cc: value_and_grad(m, cc)).lower(model, c).compile()
    (e1, g1), (e2, g2) = scanned(model, c), unrolled(model, c)
    assert abs(float(e1 - e2)) <= 1e-12 * abs(float(e1))
    assert float(jnp.abs(g1 - g2).max()) <= 1e-12 * float(jnp.abs(g1).max())
    with unrolled_blocks():  # a second block costs the same as the first: flops grow with L
        two = jax.jit(lambda m, cc: value_and_grad(m, cc)).lower(
            Graphormer3D(make_config("tiny", num_layers=2), key=jax.random.PRNGKey(4)), c).compile()
    per_block = (_flops(unrolled) - _flops(two)) / 4
    print("flops scanned", _flops(scanned), "unrolled", _flops(unrolled), "per block", per_block)
    assert per_block > 0
    assert abs(_flops(unrolled) - _flops(scanned) - 5 * per_block) <= 0.05 * _flops(unrolled)


def test_float32_compute_option(rng):
    z, x, c = _inputs(rng)
    m64 = Graphormer3D(make_config("tiny"), key=jax.random.PRNGKey(3))
    m32 = Graphormer3D(make_config("tiny", compute_dtype="float32"), key=jax.random.PRNGKey(3))
    assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(eqx.filter(m32, eqx.is_array))
               if jnp.issubdtype(a.dtype, jnp.floating))  # master weights stay float64
    o64, o32 = _run(m64, z, x, c), _run(m32, z, x, c)
    assert o32.energy.dtype == jnp.float64 and o32.delta.dtype == jnp.float64
    diff = abs(float(o32.energy - o64.energy))
    assert 0.0 < diff < 1e-5 * max(1.0, abs(float(o64.energy)))
    _, g32 = _energy_and_grad(m32, z, x, c)
    _, g64 = _energy_and_grad(m64, z, x, c)
    assert g32.dtype == jnp.float64
    assert float(jnp.abs(g32 - g64).max()) < 1e-4 * float(jnp.abs(g64).max())


def test_gbf_kernel_and_plain_gate_variants(model, rng):
    """The distance kernels of both variants (release ``rbf`` and ``gbf``), and both gates."""
    d = jnp.linspace(0.5, 4.0, 5)
    types = jnp.array([2, 2, 4, 1, 1])
    x = jnp.stack([d, jnp.zeros(5), jnp.zeros(5)], axis=1)
    feats = model.distance_features(types, x)
    dist = jnp.abs(d[:, None] - d[None, :]) + 1e-5
    expected = jnp.exp(-jnp.abs(model.kernel_widths) * (dist[..., None] - model.kernel_means) ** 2)
    assert float(jnp.abs(feats - expected).max()) < 1e-14  # pair maps start at mul 1, bias 0
    gbf = Graphormer3D(make_config("tiny", kernel="gbf"), key=jax.random.PRNGKey(0))
    sigma = jnp.abs(gbf.kernel_widths) + 1e-5
    expected = (jnp.exp(-0.5 * ((dist[..., None] - gbf.kernel_means) / sigma) ** 2)
                / (jnp.sqrt(2 * jnp.pi) * sigma))
    assert float(jnp.abs(gbf.distance_features(types, x) - expected).max()) < 1e-12
    z, x, c = _inputs(rng)
    plain = Graphormer3D(make_config("tiny", shrink_gate=False), key=jax.random.PRNGKey(0))
    assert np.isfinite(float(_run(plain, z, x, c).energy))


def test_config_round_trip_and_validation():
    cfg = make_config("small", compute_dtype="float32")
    assert GraphormerConfig.from_dict(cfg.to_dict()) == cfg
    assert dataclasses.replace(cfg, hidden=128) == cfg
    with pytest.raises(ValueError, match="divisible"):
        GraphormerConfig(hidden=30, num_heads=4)
    with pytest.raises(ValueError, match="unknown model config"):
        make_config("huge")
    with pytest.raises(ValueError, match="unknown model config keys"):
        GraphormerConfig.from_dict({**cfg.to_dict(), "depth": 3})

"""Label-free bounds at visited densities (issue 19): exact for a convex model problem, violated
by a learned energy with a spurious valley."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mofdft_jax.config import ensure_x64
from mofdft_jax.train.losses import make_visited_bounds, visited_bound_violations
from mofdft_jax.units import HARTREE_TO_KCAL

ensure_x64()


def _spd(rng, n, shift):
    a = rng.normal(size=(n, n))
    return a @ a.T / n + shift * np.eye(n)


@pytest.fixture(scope="module")
def model_problem():
    """T_S = ½pᵀAp + aᵀp (convex), T_base = ½pᵀCp (convex), E_rest = T_base + ½pᵀBp + bᵀp with
    B ≻ 0; the target is T_res = T_S − T_base and p* minimises T_S + E_rest − T_base … i.e. the
    total E = T_S + (E_rest − T_base)."""
    rng = np.random.default_rng(3)
    n = 6
    A, B, C = _spd(rng, n, 0.5), _spd(rng, n, 0.2), _spd(rng, n, 0.1)
    a, b = rng.normal(size=n), rng.normal(size=n)
    t_s = lambda p: 0.5 * p @ A @ p + a @ p                      # noqa: E731
    t_base = lambda p: 0.5 * p @ C @ p                            # noqa: E731
    rest = lambda p: t_base(p) + 0.5 * p @ B @ p + b @ p          # noqa: E731
    p_star = np.linalg.solve(A + B, -(a + b))                     # ∇(T_S + rest − T_base) = 0
    return dict(t_s=t_s, t_base=t_base, rest=rest, p_star=p_star, n=n, rng=rng)


def _bounds(prob, p_v):
    p_star = jnp.asarray(prob["p_star"])
    p_v = jnp.asarray(p_v)
    t_res = lambda p: prob["t_s"](p) - prob["t_base"](p)         # noqa: E731
    return make_visited_bounds(
        label_star=t_res(p_star), rest_star=prob["rest"](p_star), rest_visited=prob["rest"](p_v),
        grad_rest_visited=jax.grad(prob["rest"])(p_v), base_star=prob["t_base"](p_star),
        base_visited=prob["t_base"](p_v), grad_base_visited=jax.grad(prob["t_base"])(p_v),
        coeffs_visited=p_v, coeffs_star=p_star)


def _violations(prob, model_fn, p_v):
    """Violations of a model T_θ (Ha) at p_v, everything in kcal/mol."""
    p_v = jnp.asarray(p_v)
    energy, grad = jax.value_and_grad(model_fn)(p_v)
    delta = p_v - jnp.asarray(prob["p_star"])
    return np.asarray(visited_bound_violations(HARTREE_TO_KCAL * energy,
                                               HARTREE_TO_KCAL * grad @ delta,
                                               _bounds(prob, p_v)))


def test_exact_functional_satisfies_every_bound(model_problem):
    prob = model_problem
    exact = lambda p: prob["t_s"](p) - prob["t_base"](p)          # noqa: E731
    for _ in range(20):
        p_v = prob["p_star"] + prob["rng"].normal(scale=0.5, size=prob["n"])
        np.testing.assert_array_equal(_violations(prob, exact, p_v), 0.0)
    # at p* itself the variational bound is tight (equality), the others trivially hold
    np.testing.assert_allclose(_violations(prob, exact, prob["p_star"]), 0.0, atol=1e-12)


def test_spurious_valley_violates_the_bounds(model_problem):
    """A model that fits T_S near p* but has a deep well at p_s (a spurious minimum of the
    total energy) violates the variational bound there, and the descent and convexity bounds on
    the well's rim."""
    prob = model_problem
    p_s = prob["p_star"] + 0.8 * np.eye(prob["n"])[0]
    exact_total = lambda p: prob["t_s"](p) + prob["rest"](p) - prob["t_base"](p)  # noqa: E731
    depth = 2.0 * float(exact_total(p_s) - exact_total(prob["p_star"])) + 0.1  # Ha

    def model(p):
        well = depth * jnp.exp(-jnp.sum((p - p_s) ** 2) / 0.02)
        return prob["t_s"](p) - prob["t_base"](p) - well

    at_well = _violations(prob, model, p_s)
    assert at_well[0] > 50.0          # kcal/mol: E(p_s) far below E(p*)
    # the rim on the side of p*: the well pulls the descent direction away from p*
    rim = p_s - 0.1 * (p_s - prob["p_star"]) / np.linalg.norm(p_s - prob["p_star"])
    at_rim = _violations(prob, model, rim)
    assert at_rim[1] > 0.0 and at_rim[2] > 0.0
    # the pairing ∇ᵀδ and hence every violation is invariant under a linear change of
    # coefficients p′ = M p (the network's p′ = D W^{1/2} p)
    m = _spd(np.random.default_rng(0), prob["n"], 1.0)
    m_inv = np.linalg.inv(m)
    prob_t = dict(prob, t_s=lambda q: prob["t_s"](m_inv @ q),
                  t_base=lambda q: prob["t_base"](m_inv @ q),
                  rest=lambda q: prob["rest"](m_inv @ q), p_star=m @ prob["p_star"])
    np.testing.assert_allclose(_violations(prob_t, lambda q: model(m_inv @ q), m @ rim), at_rim,
                               rtol=1e-9, atol=1e-9)

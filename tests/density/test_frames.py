"""Local frames of spec §2.1: construction rules, covariance, z-sign anchor and fallback."""

import numpy as np

from mofdft_jax.density.frames import compute_local_frames
from pyscf_systems import ETHANOL, METHANE, WATER, random_rotation


def test_frames_are_proper_rotations_following_the_rules():
    z, x = ETHANOL
    frames = compute_local_frames(z, x)
    assert not frames.fallback.any()
    for a, rot in enumerate(frames.rotations):
        assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-14)
        assert np.isclose(np.linalg.det(rot), 1.0)
        heavy = [b for b in np.argsort(((x - x[a]) ** 2).sum(1), kind="stable")
                 if b != a and z[b] > 1]
        x_hat = (x[heavy[0]] - x[a]) / np.linalg.norm(x[heavy[0]] - x[a])
        assert np.allclose(rot[0], x_hat, atol=1e-14)
        # ẑ ⟂ plane of a, a1, a2; sign set by the 1/d⁴ anchor over all other atoms
        assert abs(rot[2] @ (x[heavy[1]] - x[a])) < 1e-12
        others = [b for b in range(len(z)) if b != a]
        anchor = sum((x[b] - x[a]) / np.sum((x[b] - x[a]) ** 2) ** 2 for b in others)
        assert anchor @ rot[2] > 0


def test_frames_rotate_with_the_molecule(rng):
    """R_a(Q x + t) = R_a(x) Qᵀ, so local coordinates R_a (r - x_a) are invariant."""
    z, x = ETHANOL
    q = random_rotation(rng)
    r0 = compute_local_frames(z, x).rotations
    r1 = compute_local_frames(z, x @ q.T + np.array([0.3, -1.0, 2.0])).rotations
    assert np.abs(r1 - r0 @ q.T).max() < 1e-12


def test_fallback_to_identity_without_two_non_collinear_heavy_atoms():
    # water: O has no other heavy atom, each H has only O
    frames = compute_local_frames(*WATER)
    assert frames.fallback.all()
    assert np.allclose(frames.rotations, np.eye(3))
    # methane: C has no heavy neighbour; the H atoms have only C
    assert compute_local_frames(*METHANE).fallback.all()
    # HCN is linear: the H finds C then N on the same line -> fallback; C and N have one heavy atom
    hcn = compute_local_frames(np.array([1, 6, 7]),
                               np.array([[0, 0, -1.06], [0, 0, 0], [0, 0, 1.15]]))
    assert hcn.fallback.all()


def test_padding_atoms_are_ignored():
    z, x = ETHANOL
    zp = np.concatenate([z, [0, 0]])
    xp = np.concatenate([x, np.zeros((2, 3))])
    frames = compute_local_frames(zp, xp)
    assert np.allclose(frames.rotations[:9], compute_local_frames(z, x).rotations)
    assert frames.fallback[9:].all()

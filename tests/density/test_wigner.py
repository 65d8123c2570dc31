"""Real solid harmonics and Wigner-D matrices against PySCF's spherical GTOs (spec §2.1)."""

import numpy as np
import pytest
from pyscf import gto

from mofdft_jax.density.wigner import real_solid_harmonics, wigner_d_real
from pyscf_systems import random_rotation


def _shell_mol(l: int) -> gto.Mole:
    """One uncontracted shell of angular momentum l at the origin."""
    return gto.M(atom="He 0 0 0", basis={"He": [[l, [0.7, 1.0]]]}, verbose=0)


@pytest.mark.parametrize("l", range(5))
def test_solid_harmonics_match_pyscf_angular_parts(l, rng):
    """PySCF GTO = c_l · exp(-α r²) · S_lm(r), one constant c_l for all m (order and signs)."""
    pts = rng.normal(size=(40, 3))
    ao = _shell_mol(l).eval_gto("GTOval_sph", pts)
    mine = real_solid_harmonics(l, pts) * np.exp(-0.7 * (pts ** 2).sum(1))[:, None]
    ratio = ao / mine
    assert np.allclose(ratio, ratio.flat[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("l", range(5))
def test_wigner_d_rotates_pyscf_basis_functions(l, rng):
    """φ(R r) = D^l(R) φ(r) for PySCF's own basis functions at rotated points."""
    mol = _shell_mol(l)
    pts = rng.normal(size=(30, 3))
    for _ in range(3):
        rot = random_rotation(rng)
        d = wigner_d_real(l, rot)
        ao = mol.eval_gto("GTOval_sph", pts)
        ao_rot = mol.eval_gto("GTOval_sph", pts @ rot.T)
        assert np.abs(ao_rot - ao @ d.T).max() < 1e-13 * max(1.0, np.abs(ao).max())


@pytest.mark.parametrize("l", range(5))
def test_wigner_d_is_an_orthogonal_representation(l, rng):
    r1, r2 = random_rotation(rng), random_rotation(rng)
    d1, d2, d12 = wigner_d_real(l, np.stack([r1, r2, r1 @ r2]))
    eye = np.eye(2 * l + 1)
    assert np.abs(d1 @ d1.T - eye).max() < 1e-13
    assert np.abs(d1 @ d2 - d12).max() < 1e-13
    assert np.abs(wigner_d_real(l, np.eye(3)) - eye).max() < 1e-13
    assert np.abs(wigner_d_real(l, r1.T) - d1.T).max() < 1e-13


def test_p_shell_is_the_rotation_itself(rng):
    """PySCF p order is (x, y, z), so D^1(R) = R."""
    rot = random_rotation(rng)
    assert np.abs(wigner_d_real(1, rot) - rot).max() < 1e-14

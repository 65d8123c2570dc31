"""Small molecules with PySCF integrals and Coulomb-fitted MINAO coefficients (test helper).

Shared by ``tests/density`` and ``tests/model`` (the model conftest puts this folder on sys.path).
"""

from __future__ import annotations

import numpy as np
from pyscf import df, scf

from mofdft_jax.molecules import Molecule
from mofdft_jax.qchem.basis import make_auxmol, make_mol
from mofdft_jax.qchem.integrals import build_integral_bundle
from mofdft_jax.units import ANGSTROM_TO_BOHR

#: Ethanol (Angstrom): three heavy atoms, so no atom falls back to the identity frame.
ETHANOL = (np.array([6, 6, 8, 1, 1, 1, 1, 1, 1]), np.array([
    [-0.0017, 0.0041, -0.0006], [1.5115, -0.0030, -0.0010], [1.9861, 1.3424, 0.0015],
    [-0.3882, -1.0177, 0.0143], [-0.3942, 0.5139, -0.8827], [-0.3924, 0.5358, 0.8730],
    [1.8893, -0.5289, -0.8858], [1.8859, -0.5307, 0.8834], [2.9536, 1.3066, 0.0028]]))
WATER = (np.array([8, 1, 1]), np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692],
                                        [0.0, -0.7572, -0.4692]]))
METHANE = (np.array([6, 1, 1, 1, 1]), np.array([
    [0.0, 0.0, 0.0], [0.6291, 0.6291, 0.6291], [-0.6291, -0.6291, 0.6291],
    [-0.6291, 0.6291, -0.6291], [0.6291, -0.6291, -0.6291]]))
METHANOL = (np.array([6, 8, 1, 1, 1, 1]), np.array([
    [-0.0466, 0.6649, 0.0], [-0.0466, -0.7551, 0.0], [-1.0834, 0.9800, 0.0],
    [0.4372, 1.0772, 0.8881], [0.4372, 1.0772, -0.8881], [0.8630, -1.0683, 0.0]]))
ETHANE = (np.array([6, 6, 1, 1, 1, 1, 1, 1]), np.array([
    [0.0, 0.0, 0.7650], [0.0, 0.0, -0.7650], [1.0194, 0.0, 1.1617], [-0.5097, 0.8828, 1.1617],
    [-0.5097, -0.8828, 1.1617], [-1.0194, 0.0, -1.1617], [0.5097, -0.8828, -1.1617],
    [0.5097, 0.8828, -1.1617]]))
FORMALDEHYDE = (np.array([6, 8, 1, 1]), np.array([
    [0.0, 0.0, -0.5297], [0.0, 0.0, 0.6742], [0.0, 0.9353, -1.1142], [0.0, -0.9353, -1.1142]]))
FLUOROMETHANE = (np.array([6, 9, 1, 1, 1]), np.array([
    [0.0, 0.0, -0.6300], [0.0, 0.0, 0.7530], [1.0300, 0.0, -0.9800], [-0.5150, 0.8920, -0.9800],
    [-0.5150, -0.8920, -0.9800]]))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation matrix."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def make_system(numbers, coords_angstrom, *, rotation=None, shift=None, orbital_basis="sto-3g"):
    """Integral bundle (overlap included, no grid) and Coulomb-fitted MINAO coefficients.

    The geometry is ``coords @ rotation.T + shift`` (Angstrom); everything is recomputed by PySCF.
    Returns ``(bundle, coeffs)``.
    """
    coords = np.asarray(coords_angstrom, dtype=np.float64)
    if rotation is not None:
        coords = coords @ np.asarray(rotation).T
    if shift is not None:
        coords = coords + np.asarray(shift)
    mol = make_mol(Molecule(numbers=np.asarray(numbers), coords_bohr=coords * ANGSTROM_TO_BOHR,
                            name="test"), basis=orbital_basis)
    auxmol = make_auxmol(mol)
    bundle = build_integral_bundle(mol, auxmol, grid_level=None, with_forces=False)
    dm = scf.hf.init_guess_by_minao(mol)
    int3c = df.incore.aux_e2(mol, auxmol, "int3c2e", aosym="s1").reshape(mol.nao, mol.nao, -1)
    rhs = np.einsum("ijP,ij->P", int3c, dm)
    coeffs = np.linalg.solve(np.asarray(bundle.coulomb), rhs)
    return bundle, coeffs

"""Cartesian geometry helpers shared by the readers, samplers and builders (host world, NumPy).

Bond graphs from covalent radii, bond angles and dihedrals, NeRF placement of one atom from three
references (internal -> Cartesian), the moving side of a bond (for rigid scans), and Kabsch
alignment. Units follow the caller: every function is unit-agnostic except :func:`bond_pairs`,
which takes Angstrom.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy.spatial import cKDTree

#: A pair is bonded when its distance is below this factor times the sum of covalent radii.
BOND_TOLERANCE = 1.25


def bond_pairs(numbers: np.ndarray, coords_angstrom: np.ndarray,
               tolerance: float = BOND_TOLERANCE) -> np.ndarray:
    """Bonded pairs ``(nbond, 2)`` (i < j) from covalent radii (Cordero 2008, ``ase.data``).

    A pair is bonded when ``d_ij < tolerance * (r_i + r_j)``; 1.25 separates C-H (1.09 A vs a
    cutoff of 1.34 A) from non-bonded H...H contacts in organic molecules.
    """
    from ase.data import covalent_radii

    numbers = np.asarray(numbers)
    coords = np.asarray(coords_angstrom, dtype=np.float64)
    radii = covalent_radii[numbers]
    cutoff = tolerance * 2 * radii.max()
    pairs = cKDTree(coords).query_pairs(cutoff, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    d = np.linalg.norm(coords[pairs[:, 0]] - coords[pairs[:, 1]], axis=1)
    keep = d < tolerance * (radii[pairs[:, 0]] + radii[pairs[:, 1]])
    pairs = np.sort(pairs[keep], axis=1)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def neighbour_lists(natm: int, pairs: np.ndarray) -> list[list[int]]:
    """Sorted neighbour list of every atom from bonded ``pairs``."""
    nbrs: list[list[int]] = [[] for _ in range(natm)]
    for i, j in np.asarray(pairs, dtype=np.int64):
        nbrs[int(i)].append(int(j))
        nbrs[int(j)].append(int(i))
    return [sorted(n) for n in nbrs]


def moving_side(nbrs: list[list[int]], i: int, j: int) -> np.ndarray:
    """Atoms on ``j``'s side of the bond ``i-j`` (``j`` included, ``i`` excluded).

    Raises ``ValueError`` when ``i`` and ``j`` are in one ring (the bond does not split the graph).
    """
    seen = {j}
    queue = deque([j])
    while queue:
        a = queue.popleft()
        for b in nbrs[a]:
            if a == j and b == i:
                continue
            if b == i:
                raise ValueError(f"atoms {i} and {j} are in a ring: the bond does not split the "
                                 "molecule")
            if b not in seen:
                seen.add(b)
                queue.append(b)
    return np.array(sorted(seen), dtype=np.int64)


def bond_angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """Angle a-b-c in radians."""
    u, v = a - b, c - b
    cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))


def dihedral(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> float:
    """Dihedral a-b-c-d in radians, in (-pi, pi] (IUPAC sign: clockwise looking along b->c)."""
    b0, b1, b2 = a - b, c - b, d - c
    b1n = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1n) * b1n
    w = b2 - np.dot(b2, b1n) * b1n
    x = np.dot(v, w)
    y = np.dot(np.cross(b1n, v), w)
    return float(np.arctan2(y, x))


def cross3(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Cross product of 3-vectors along the last axis (broadcasts; much faster than ``np.cross``
    for small arrays)."""
    return np.stack([u[..., 1] * v[..., 2] - u[..., 2] * v[..., 1],
                     u[..., 2] * v[..., 0] - u[..., 0] * v[..., 2],
                     u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]], axis=-1)


def place_atom(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond, angle, torsion) -> np.ndarray:
    """NeRF: the position ``d`` with ``|d-c| = bond``, angle b-c-d = ``angle`` and dihedral
    a-b-c-d = ``torsion`` (radians), given three placed atoms a, b, c (Parsons et al. 2005).

    Batched: ``a, b, c`` of shape ``(..., 3)`` and ``bond, angle, torsion`` of shape ``(...)``.
    """
    bond, angle, torsion = (np.asarray(t, dtype=np.float64)[..., None]
                            for t in (bond, angle, torsion))
    bc = c - b
    bc = bc / np.linalg.norm(bc, axis=-1, keepdims=True)
    n = cross3(b - a, bc)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    return c + bond * (-np.cos(angle) * bc + np.sin(angle) * (np.cos(torsion) * cross3(n, bc)
                                                              + np.sin(torsion) * n))


def rotate_about_axis(points: np.ndarray, origin: np.ndarray, axis: np.ndarray,
                      angle: float) -> np.ndarray:
    """Rotate ``points (n, 3)`` by ``angle`` (radians, right-handed) about the line through
    ``origin`` along ``axis`` (Rodrigues' formula)."""
    k = axis / np.linalg.norm(axis)
    p = points - origin
    cos, sin = np.cos(angle), np.sin(angle)
    rotated = p * cos + np.cross(k, p) * sin + np.outer(p @ k, k) * (1 - cos)
    return rotated + origin


def kabsch_align(mobile: np.ndarray, target: np.ndarray,
                 weights: np.ndarray | None = None) -> np.ndarray:
    """``mobile (..., n, 3)`` rotated and translated onto ``target (n, 3)`` with the least weighted
    RMSD (Kabsch 1976; proper rotations, det = +1); batched over leading axes."""
    mobile = np.asarray(mobile, dtype=np.float64)
    w = np.ones(mobile.shape[-2]) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mc = np.einsum("i,...ij->...j", w, mobile)
    tc = w @ target
    p, q = mobile - mc[..., None, :], target - tc
    h = np.einsum("...ij,ik->...jk", p * w[:, None], q)
    u, _, vt = np.linalg.svd(h)
    sign = np.sign(np.linalg.det(np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)))
    vt = vt.copy()
    vt[..., 2, :] *= sign[..., None]
    r = np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)
    return p @ np.swapaxes(r, -1, -2) + tc

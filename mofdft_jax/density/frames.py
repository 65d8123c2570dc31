"""Per-atom local frames that make the density coefficients rotation invariant (spec §2.1).

For atom a, with the heavy (non-H) atoms other than a sorted by distance (ties by index):

* x̂ = normalise(x_{a1} - x_a), a1 the nearest heavy atom;
* ẑ = normalise(x̂ × (x_{a2} - x_a)), a2 the next nearest heavy atom that is not collinear with
  a and a1 (cross product numerically zero: |x̂ × (x_{a2} - x_a)| ≤ 1e-8 |x_{a2} - x_a|);
* z-sign anchor (the release, not the paper): anchor = Σ_{b≠a} (x_b - x_a)/d_ab⁴ over ALL other
  atoms; ẑ is flipped when anchor·ẑ < 0;
* ŷ = ẑ × x̂, and the frame R_a has rows [x̂, ŷ, ẑ], so the local coordinates of a point r are
  R_a (r - x_a).

Fallback: if there is no heavy-atom candidate, or no non-collinear one (CH4's carbon, water's H
atoms, any atom of a linear molecule), R_a = I. Such atoms are NOT rotation invariant.

Host NumPy (per-geometry setup); importable without PySCF.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: Relative tolerance of the collinearity test (the release uses ``np.allclose(cross, 0)``).
COLLINEAR_TOL = 1e-8


class LocalFrames(NamedTuple):
    """Local frames of all atoms of one geometry.

    Attributes:
      rotations: ``(natm, 3, 3)`` R_a with rows [x̂, ŷ, ẑ].
      fallback: ``(natm,)`` True where R_a = I because no (non-collinear) heavy atom exists.
    """

    rotations: np.ndarray
    fallback: np.ndarray


def compute_local_frames(atom_numbers: np.ndarray, coords: np.ndarray) -> LocalFrames:
    """Local frame of every atom, exactly as spec §2.1 (release ``get_rotations``).

    Args:
      atom_numbers: ``(natm,)`` atomic numbers (0 marks a padding atom, ignored as neighbour).
      coords: ``(natm, 3)`` coordinates (any length unit; the frames are unit free).

    Returns:
      :class:`LocalFrames` with ``(natm, 3, 3)`` rotations and the ``(natm,)`` fallback mask.
    """
    atom_numbers = np.asarray(atom_numbers)
    coords = np.asarray(coords, dtype=np.float64)
    natm = len(atom_numbers)
    real = atom_numbers > 0
    diff = coords[None, :, :] - coords[:, None, :]  # diff[a, b] = x_b - x_a
    dist2 = (diff ** 2).sum(-1)
    heavy = atom_numbers > 1
    rotations = np.tile(np.eye(3), (natm, 1, 1))
    fallback = np.zeros(natm, dtype=bool)
    for a in range(natm):
        if not real[a]:
            fallback[a] = True
            continue
        order = np.argsort(dist2[a], kind="stable")
        candidates = [b for b in order if b != a and heavy[b]]
        if not candidates:
            fallback[a] = True
            continue
        x = diff[a, candidates[0]]
        z = None
        for b in candidates[1:]:
            v = diff[a, b]
            cross = np.cross(x, v)
            if np.linalg.norm(cross) > COLLINEAR_TOL * np.linalg.norm(x) * np.linalg.norm(v):
                z = cross
                break
        if z is None:
            fallback[a] = True
            continue
        others = real & (np.arange(natm) != a)
        weights = 1.0 / dist2[a, others] ** 2
        anchor = (diff[a, others] * weights[:, None]).sum(0)
        if anchor @ z < 0:
            z = -z
        y = np.cross(z, x)
        rotations[a] = np.stack([x / np.linalg.norm(x), y / np.linalg.norm(y),
                                 z / np.linalg.norm(z)])
    return LocalFrames(rotations=rotations, fallback=fallback)

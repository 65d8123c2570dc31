"""Gaussian cube files of a density ρ_p(r) = Σ_μ p_μ ω_μ(r) (for VMD, VESTA, Avogadro …).

The box and the file layout are PySCF's ``tools.cubegen`` ones: a rectangular box around the atoms
with a margin (3 Bohr by default), ``nx × ny × nz`` points including both box faces, atoms and the
origin in Bohr, values in electrons/Bohr³, six values per line, z fastest. The density is evaluated
with the density basis (``auxmol.eval_gto``) in blocks of points, so memory stays at
``block × naux`` floats whatever the grid.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from pyscf import gto
from pyscf.tools import cubegen

#: Points per block of density-basis evaluation.
DEFAULT_BLOCK = 8192


def evaluate_density(coeffs, auxmol: gto.Mole, coords: np.ndarray, *,
                     block: int = DEFAULT_BLOCK) -> np.ndarray:
    """``(npts,)`` ρ_p at ``coords`` (Bohr), evaluated in blocks of ``block`` points."""
    coeffs = np.asarray(coeffs, dtype=np.float64)
    out = np.empty(len(coords))
    for i0 in range(0, len(coords), block):
        i1 = min(i0 + block, len(coords))
        out[i0:i1] = auxmol.eval_gto("GTOval_sph", coords[i0:i1]) @ coeffs
    return out


def write_density_cube(path, coeffs, mol: gto.Mole, auxmol: gto.Mole, *, nx: int = 80,
                       ny: int = 80, nz: int = 80, resolution: float | None = None,
                       margin: float = cubegen.BOX_MARGIN, comment: str | None = None,
                       block: int = DEFAULT_BLOCK) -> np.ndarray:
    """Write ρ_p as a Gaussian cube file (PySCF ``cubegen`` grid); returns the field.

    The returned array has shape ``(nx, ny, nz)`` (e/Bohr³), as written.

    Args:
      path: output file.
      coeffs: ``(naux,)`` density coefficients in the basis of ``auxmol``.
      mol: molecule whose atoms are written (and define the box).
      nx, ny, nz: points per axis (ignored when ``resolution``, in Bohr, is given).
      margin: box margin around the atoms, Bohr.
    """
    cube = cubegen.Cube(mol, nx, ny, nz, resolution, margin)
    field = evaluate_density(coeffs, auxmol, cube.get_coords(), block=block)
    field = field.reshape(cube.nx, cube.ny, cube.nz)
    cube.write(field, str(path), comment=comment or "M-OFDFT electron density (e/Bohr^3)")
    return field


@dataclasses.dataclass(frozen=True)
class CubeData:
    """Contents of a cube file (Bohr, as stored).

    Attributes:
      field: ``(nx, ny, nz)`` values.
      origin: ``(3,)`` position of point (0, 0, 0).
      axes: ``(3, 3)`` step vectors between neighbouring points along x, y, z.
      atom_numbers: ``(natm,)``; coords: ``(natm, 3)``.
    """

    field: np.ndarray
    origin: np.ndarray
    axes: np.ndarray
    atom_numbers: np.ndarray
    coords: np.ndarray

    @property
    def voxel_volume(self) -> float:
        """Volume per point, |det(axes)|, Bohr³."""
        return float(abs(np.linalg.det(self.axes)))

    def integrate(self) -> float:
        """Σ field · voxel volume (the electron count for a density)."""
        return float(self.field.sum() * self.voxel_volume)


def read_cube(path) -> CubeData:
    """Read a Gaussian cube file with Bohr units (positive point counts)."""
    with open(path) as f:
        f.readline()
        f.readline()
        head = f.readline().split()
        natm, origin = int(head[0]), np.array(head[1:4], dtype=float)
        counts, axes = [], []
        for _ in range(3):
            row = f.readline().split()
            counts.append(int(row[0]))
            axes.append([float(x) for x in row[1:4]])
        numbers, coords = [], []
        for _ in range(abs(natm)):
            row = f.readline().split()
            numbers.append(int(row[0]))
            coords.append([float(x) for x in row[2:5]])
        values = np.array(f.read().split(), dtype=float)
    if any(c <= 0 for c in counts):
        raise ValueError(f"{path}: cube files in Angstrom (negative point counts) are not read")
    return CubeData(field=values.reshape(counts), origin=origin, axes=np.array(axes),
                    atom_numbers=np.array(numbers), coords=np.array(coords))

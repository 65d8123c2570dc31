"""Memory of a solve or a KS run, estimated before any integral is computed (issue 18).

A 3,240-atom box used to run for minutes while the resident memory climbed (7 GB in 45 s under
``mofdft ks``) before failing. These estimates need only the basis sizes (PySCF ``Mole`` objects,
built in seconds even for thousands of atoms) and the per-element atomic grid sizes, and count
the arrays that dominate:

``mofdft solve`` (:func:`estimate_solve_memory`; arrays of :func:`~mofdft_jax.qchem.integrals.
build_integral_bundle`, each alive twice while it is copied from PySCF's NumPy to JAX):

* the Coulomb matrix W̃ (``naux²`` float64) and, for preconditioned optimisers and reparametrised
  functionals, the overlap W (``naux²``);
* the basis values on the grid, ``(nblk, 4, blk, nsig)``, :data:`GRID_COPIES` times
  (:func:`~mofdft_jax.qchem.grids.build_grid_bundle`): ``nsig = naux`` for small molecules
  (dense), else the functions that reach
  the densest block, estimated as the most functions whose screening radius
  √(ln 10¹² / α_min) + 2 Bohr covers an atom (calibrated on methane boxes of 40 and 135 atoms at
  grid level 1: 568 and 826 estimated against 619 and 732 built, within 15 %);
* the Hellmann–Feynman force integrals ``(natm, 3, naux)`` when they are stored, the block of
  3-centre integrals of the initial-guess fit (at most
  :data:`~mofdft_jax.qchem.fitting.FIT_BLOCK_MB`) and the solver's trajectory.

``mofdft ks`` (:func:`estimate_ks_memory`): the density and Fock matrices recorded at every SCF
step (three ``nao²`` arrays per step, up to ``max_cycle + 2`` steps), PySCF's working matrices
and DIIS subspace, the 4-centre integrals (kept in memory when they fit PySCF's ``max_memory``,
else recomputed: counted as that limit) or the density-fitting tensor, and the grid.

They count the listed arrays only and decide refusals; they are not reported as measurements.
Measured against the peak resident memory (``/usr/bin/time -v``, 2-core CPU, 6-31G(2df,p)):
``mofdft solve`` ethanol grid 2: 1.66 GiB estimated, 1.49 GiB peak; 40-atom methane box grid 1:
4.89 GiB estimated, 4.45 GiB peak; ``mofdft ks --no-forces`` on that box: 1.89 GiB estimated,
1.27 GiB peak. A 4,050-atom methane box is refused in 2 s (ks, ~1.9 TiB) and 9 s (solve, ~1.6 TiB).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from pyscf import dft, gto

#: Bohr added to each function's screening radius: the extent of a block of grid points.
_BLOCK_REACH_BOHR = 2.0
#: Copies of the grid basis values alive at the peak of a solve: the screened blocks and the
#: padded array while it is filled (the JAX array is the padded array itself on the CPU,
#: :func:`~mofdft_jax.qchem.grids.aligned_zeros`). Measured on a 40-atom methane box at grid
#: level 1: peak RSS 4.45 GiB with 2.2 GB of values (``/usr/bin/time -v mofdft solve``; 8.6 GiB
#: before the values were aliased instead of copied).
GRID_COPIES = 2


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Estimated bytes of the large arrays of one job.

    Attributes:
      job: what is estimated (``"mofdft solve"``, ``"mofdft ks"``).
      molecule: molecule name.
      sizes: ``{"natm", "nao", "naux", "n_grid_points", ...}``.
      parts: ``{description: bytes}``.
    """

    job: str
    molecule: str
    sizes: dict
    parts: dict

    @property
    def total_bytes(self) -> float:
        return float(sum(self.parts.values()))

    def describe(self) -> str:
        """One line: the sizes, the total and its largest parts."""
        sizes = ", ".join(f"{k} {v:,}" for k, v in self.sizes.items())
        top = sorted(self.parts.items(), key=lambda kv: -kv[1])[:3]
        parts = ", ".join(f"{name} {format_bytes(b)}" for name, b in top if b > 0)
        return (f"{self.molecule}: {self.job} needs ~{format_bytes(self.total_bytes)} "
                f"({parts}); {sizes}")


def format_bytes(n_bytes: float) -> str:
    """``n_bytes`` in MiB, GiB or TiB, three significant digits."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes / 2**20:.3g} MiB"


def count_grid_points(mol: gto.Mole, level: int) -> int:
    """Points of PySCF's grid of ``mol`` at ``level`` before the Becke weights drop the few that
    vanish (Σ over atoms of the pruned atomic grid of each element; ~0.5 % above the built
    grid)."""
    grids = dft.gen_grid.Grids(mol)
    grids.level = level
    atomic = grids.gen_atomic_grids(mol, grids.atom_grid, grids.radi_method, grids.level,
                                    grids.prune)
    return int(sum(len(atomic[mol.atom_symbol(a)][1]) for a in range(mol.natm)))


def estimate_significant_functions(auxmol: gto.Mole, chunk: int = 64) -> int:
    """Most density-basis functions that reach one block of grid points (see the module
    docstring), at most ``naux``. Distances in chunks of ``chunk`` atoms: memory
    ``chunk × nbas``."""
    from mofdft_jax.qchem.grids import DEFAULT_SCREEN_THRESHOLD, _shell_table

    coords = auxmol.atom_coords()
    atoms, _, alpha_min, _, _, nfunc = _shell_table(auxmol)  # per shell; the grid's own table
    reach = np.sqrt(np.log(1.0 / DEFAULT_SCREEN_THRESHOLD) / alpha_min) + _BLOCK_REACH_BOHR
    centres = coords[atoms]
    best = 0
    for a0 in range(0, len(coords), chunk):
        d = np.linalg.norm(coords[a0:a0 + chunk, None, :] - centres[None], axis=-1)
        best = max(best, int(((d < reach[None]) * nfunc[None]).sum(axis=1).max()))
    return min(best, int(auxmol.nao_nr()))


def estimate_grid_values_bytes(mol: gto.Mole, auxmol: gto.Mole, level: int, *,
                               itemsize: int = 8, block_size: int | None = None
                               ) -> tuple[int, float]:
    """``(n_grid_points, bytes)`` of the basis values of :func:`~mofdft_jax.qchem.grids.
    build_grid_bundle` (dense below its ``DENSE_LIMIT_BYTES``, else screened)."""
    from mofdft_jax.qchem.grids import DEFAULT_BLOCK_SIZE, DENSE_LIMIT_BYTES

    block_size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
    npts = count_grid_points(mol, level)
    naux = int(auxmol.nao_nr())
    nblk = -(-npts // block_size)
    if naux * npts * 4 * itemsize < DENSE_LIMIT_BYTES:
        nsig = naux
    else:
        nsig = estimate_significant_functions(auxmol)
    values = nblk * 4 * block_size * nsig * itemsize
    points = nblk * block_size * 4 * 8 + nblk * nsig * 4  # coords + weights, function indices
    return npts, float(values + points)


def estimate_solve_memory(mol: gto.Mole, auxmol: gto.Mole, *, grid_level: int | None,
                          name: str = "molecule",
                          grid_dtype: str = "float64", with_overlap: bool = True,
                          with_forces: bool = True, extra: dict | None = None,
                          fit_block_mb: float | None = None) -> MemoryEstimate:
    """:class:`MemoryEstimate` of an orbital-free solve of ``mol`` (module docstring).

    ``grid_level`` ``None``: no grid (grid-free learned targets). ``extra``: more named parts
    in bytes (the trajectory buffers of ``mofdft solve``).
    """
    from mofdft_jax.qchem.fitting import FIT_BLOCK_MB

    fit_block_mb = FIT_BLOCK_MB if fit_block_mb is None else fit_block_mb
    naux = int(auxmol.nao_nr())
    nao = int(mol.nao_nr())
    square = naux * naux * 8.0
    parts = {"Coulomb matrix": 2 * square}
    if with_overlap:
        parts["overlap matrix"] = 2 * square
    sizes = {"natm": mol.natm, "nao": nao, "naux": naux}
    if grid_level is not None:
        itemsize = np.dtype(grid_dtype).itemsize
        npts, grid_bytes = estimate_grid_values_bytes(mol, auxmol, grid_level, itemsize=itemsize)
        parts["grid basis values"] = GRID_COPIES * grid_bytes
        sizes["n_grid_points"] = npts
    if with_forces:
        parts["force integrals"] = 2 * mol.natm * 3 * naux * 8.0
    parts["guess fit block"] = min(fit_block_mb * 1e6, nao * (nao + 1) / 2 * naux * 8.0)
    parts.update(extra or {})
    return MemoryEstimate("mofdft solve", name, sizes, parts)


def estimate_ks_memory(mol: gto.Mole, settings, *, name: str = "molecule") -> MemoryEstimate:
    """:class:`MemoryEstimate` of :func:`~mofdft_jax.qchem.ksdft.run_ks` with ``settings``
    (a :class:`~mofdft_jax.qchem.settings.LabelSettings`)."""
    nao = int(mol.nao_nr())
    square = nao * nao * 8.0
    pair = nao * (nao + 1) / 2 * 8.0
    limit = settings.max_memory_mb * 1e6
    parts = {"recorded SCF matrices": 3 * (settings.max_cycle + 2) * square,
             "PySCF matrices and DIIS": (10 + 2 * settings.diis_space) * square}
    sizes = {"natm": mol.natm, "nao": nao}
    if settings.uses_density_fit(mol.natm):
        from pyscf import df

        auxmol = df.make_auxmol(mol, settings.df_auxbasis)
        naux = int(auxmol.nao_nr())
        sizes["naux_df"] = naux
        parts["density-fitting tensor"] = min(limit, naux * pair)
    else:
        eri = pair * (nao * (nao + 1) / 2)
        parts["4-centre integrals"] = eri if eri < limit else 0.0
    npts = count_grid_points(mol, settings.grid_level)
    sizes["n_grid_points"] = npts
    parts["grid"] = npts * 4 * 8.0 + min(limit, npts * nao * 8.0 * 4)
    return MemoryEstimate("mofdft ks", name, sizes, parts)


__all__ = ["MemoryEstimate", "count_grid_points", "estimate_grid_values_bytes",
           "estimate_ks_memory", "estimate_significant_functions", "estimate_solve_memory",
           "format_bytes"]

"""Quadrature grid with blocked, screened density-basis values (host side of the grid terms).

:func:`build_grid_bundle` turns a PySCF ``dft.gen_grid.Grids`` (Becke partitioning, NWChem pruning:
PySCF defaults) into a :class:`~mofdft_jax.bundle.GridBundle`:

1. points are ordered by recursive coordinate bisection into spatially compact blocks of
   ``block_size`` points (the last block padded with zero-weight points);
2. for each block only the density-basis functions that are non-negligible there are kept: a cheap
   per-shell radial upper bound (distance from the block to the shell's atom) pre-screens shells, the
   survivors are evaluated with ``auxmol.eval_gto('GTOval_sph_deriv1', coords)`` on the block, and a
   function is kept when max |value| or max |gradient component| over the block exceeds
   ``screen_threshold``;
3. blocks are padded to a common ``nsig`` with zero columns and index 0.

Small molecules (``naux·ngrid·4·8`` bytes under :data:`DENSE_LIMIT_BYTES`) keep every function
(``nsig = naux``, no screening): one contiguous array is fastest there. Large molecules are screened,
so the stored values grow linearly with size; no ``ngrid × naux`` array is ever formed in that mode.

References: spec §4.1 (grid level 2 for ethanol/QM9, level 1 for chignolin), environment_notes §3–4.
"""

from __future__ import annotations

import numpy as np
from pyscf import dft, gto

from mofdft_jax.bundle import GridBundle

#: Automatic choice: keep all functions on all points when the values take less than this.
DENSE_LIMIT_BYTES = 1.5e9
#: Default points per block (see tests/benchmarks/test_bench_functionals.py for the timing).
DEFAULT_BLOCK_SIZE = 128
#: Default screening threshold on max |ω_μ| and max |∂ω_μ| over a block.
DEFAULT_SCREEN_THRESHOLD = 1e-12
#: Safety factor of the analytic pre-screen (the exact filter decides; this only skips work).
_PRESCREEN_MARGIN = 1e-3


def make_grids(mol: gto.Mole, level: int = 2) -> dft.gen_grid.Grids:
    """PySCF ``Grids(mol)`` at ``level`` with PySCF's default pruning and Becke partitioning.

    No alignment padding (the bundle pads its own blocks).
    """
    grids = dft.gen_grid.Grids(mol)
    grids.level = level
    grids.alignment = 0
    grids.verbose = 0
    grids.build(with_non0tab=False)
    return grids


def order_points_in_blocks(coords: np.ndarray, block_size: int) -> np.ndarray:
    """Permutation of the points into spatially compact blocks (recursive coordinate bisection).

    Each split cuts the longest extent of the current point set at a multiple of ``block_size``, so
    every block but the last holds exactly ``block_size`` points. Returns ``(npts,)`` indices.
    """
    out = []
    stack = [np.arange(len(coords))]
    while stack:
        ix = stack.pop()
        n = len(ix)
        if n <= block_size:
            out.append(ix)
            continue
        nblk = -(-n // block_size)
        n_left = (nblk // 2) * block_size
        pts = coords[ix]
        axis = int(np.argmax(pts.max(axis=0) - pts.min(axis=0)))
        order = np.argsort(pts[:, axis], kind="stable")
        # push right first so blocks come out left to right
        stack.append(ix[order[n_left:]])
        stack.append(ix[order[:n_left]])
    return np.concatenate(out)


def _shell_table(auxmol: gto.Mole):
    """Per shell: atom, l, smallest exponent, |coefficient| sum, first function index, nfunc."""
    nbas = auxmol.nbas
    atom = np.array([auxmol.bas_atom(b) for b in range(nbas)])
    ang = np.array([auxmol.bas_angular(b) for b in range(nbas)])
    alpha = np.array([auxmol.bas_exp(b).min() for b in range(nbas)])
    coef = np.array([np.abs(auxmol.bas_ctr_coeff(b)).sum() for b in range(nbas)])
    nfunc = np.array([(2 * auxmol.bas_angular(b) + 1) * auxmol.bas_nctr(b) for b in range(nbas)])
    offset = np.concatenate([[0], np.cumsum(nfunc)[:-1]])
    return atom, ang, alpha, coef, offset, nfunc


def _angular_constants(auxmol: gto.Mole, ang: np.ndarray, alpha: np.ndarray, coef: np.ndarray):
    """κ_l with max_Ω |ω(r)| ≤ c κ_l r^l e^{-αr²} for PySCF's real spherical functions.

    Sampled on 400 directions at one radius for the first shell of each l, times 1.5 for safety.
    """
    golden = np.pi * (3.0 - np.sqrt(5.0))
    k = np.arange(400) + 0.5
    z = 1.0 - 2.0 * k / 400
    r_xy = np.sqrt(1.0 - z * z)
    dirs = np.stack([r_xy * np.cos(golden * k), r_xy * np.sin(golden * k), z], axis=1)
    kappa = {}
    for l in np.unique(ang):
        b = int(np.nonzero(ang == l)[0][0])
        r0 = np.sqrt(max(l, 1) / (2.0 * alpha[b]))
        pts = auxmol.atom_coord(auxmol.bas_atom(b)) + r0 * dirs
        vals = auxmol.eval_gto("GTOval_sph", pts, shls_slice=(b, b + 1))
        radial = coef[b] * r0**l * np.exp(-alpha[b] * r0 * r0)
        kappa[int(l)] = 1.5 * np.abs(vals).max() / radial
    return np.array([kappa[int(l)] for l in ang])


def _radial_max_beyond(n: np.ndarray, alpha: np.ndarray, d: np.ndarray) -> np.ndarray:
    """max_{r ≥ d} r^n e^{-α r²} (n ≥ 0): the peak sits at r* = max(d, sqrt(n/(2α)))."""
    r = np.maximum(d, np.sqrt(n / (2.0 * alpha)))
    with np.errstate(divide="ignore"):
        return np.where(n == 0, 1.0, r**n) * np.exp(-alpha * r * r)


def _shell_bounds(dist: np.ndarray, ang, alpha, coef, kappa) -> np.ndarray:
    """Upper bound of |ω| and |∇ω| of every shell beyond distance ``dist`` (per shell) from its atom.

    |∇(S_l e^{-αr²})| ≤ (|∇S_l| + 2αr|S_l|) e^{-αr²} with |∇S_l| ≤ (2l+1) κ_l r^{l-1}.
    """
    value = _radial_max_beyond(ang, alpha, dist)
    grad = 2.0 * alpha * _radial_max_beyond(ang + 1, alpha, dist)
    grad = grad + np.where(ang > 0, (2 * ang + 1) * _radial_max_beyond(np.maximum(ang - 1, 0),
                                                                      alpha, dist), 0.0)
    return coef * kappa * np.maximum(value, grad)


def _contiguous_runs(shells: np.ndarray) -> list[tuple[int, int]]:
    """Sorted shell indices -> list of half-open contiguous ranges."""
    if len(shells) == 0:
        return []
    breaks = np.nonzero(np.diff(shells) != 1)[0]
    starts = np.concatenate([[shells[0]], shells[breaks + 1]])
    stops = np.concatenate([shells[breaks] + 1, [shells[-1] + 1]])
    return list(zip(starts.tolist(), stops.tolist()))


def build_grid_bundle(mol: gto.Mole, auxmol: gto.Mole, level: int = 2, *,
                      block_size: int = DEFAULT_BLOCK_SIZE,
                      screen_threshold: float = DEFAULT_SCREEN_THRESHOLD,
                      dense: bool | None = None,
                      grids: dft.gen_grid.Grids | None = None) -> GridBundle:
    """Quadrature grid of ``mol`` with blocked, screened values of the density basis ``auxmol``.

    Args:
      mol: the molecule (orbital basis irrelevant; defines atoms for the grid).
      auxmol: the density basis (:func:`mofdft_jax.qchem.basis.make_auxmol`).
      level: PySCF grid level (spec §4.1: 2 for ethanol/QM9, 1 for large systems).
      block_size: points per block.
      screen_threshold: keep a function on a block when max |ω| or max |∂ω| there exceeds this.
      dense: ``True`` keeps all functions everywhere (``nsig = naux``), ``False`` screens, ``None``
        picks dense when ``naux·ngrid·4·8`` bytes < :data:`DENSE_LIMIT_BYTES`.
      grids: a built PySCF ``Grids`` to use instead of building one at ``level`` (same points as an
        existing KS calculation; its zero-weight alignment padding is dropped).

    Returns:
      A :class:`GridBundle` of NumPy arrays: ``weights (nblk, blk)``, ``coords (nblk, blk, 3)``,
      ``ao (nblk, 4, blk, nsig)``, ``idx (nblk, nsig)`` (int32).
    """
    if grids is None:
        grids = make_grids(mol, level)
    keep = grids.weights != 0.0
    coords_all = np.asarray(grids.coords)[keep]
    weights_all = np.asarray(grids.weights)[keep]
    naux = auxmol.nao_nr()
    npts = len(weights_all)
    if dense is None:
        dense = naux * npts * 4 * 8 < DENSE_LIMIT_BYTES

    order = order_points_in_blocks(coords_all, block_size)
    nblk = -(-npts // block_size)
    npad = nblk * block_size - npts
    order = np.concatenate([order, np.full(npad, order[-1])])
    coords = coords_all[order].reshape(nblk, block_size, 3)
    weights = weights_all[order]
    weights[npts:] = 0.0
    weights = weights.reshape(nblk, block_size)
    real = (np.arange(nblk * block_size) < npts).reshape(nblk, block_size)

    if dense:
        ao = np.empty((nblk, 4, block_size, naux))
        for b in range(nblk):
            ao[b] = auxmol.eval_gto("GTOval_sph_deriv1", coords[b])
            ao[b][:, ~real[b]] = 0.0
        idx = np.broadcast_to(np.arange(naux, dtype=np.int32), (nblk, naux)).copy()
        return GridBundle(weights=weights, coords=coords, ao=ao, idx=idx)

    atom, ang, alpha, coef, offset, nfunc = _shell_table(auxmol)
    kappa = _angular_constants(auxmol, ang, alpha, coef)
    atom_coords = auxmol.atom_coords()
    blocks_ao, blocks_idx = [], []
    for b in range(nblk):
        pts = coords[b][real[b]]
        dist_atoms = np.sqrt(((pts[:, None, :] - atom_coords[None]) ** 2).sum(-1)).min(axis=0)
        bound = _shell_bounds(dist_atoms[atom], ang, alpha, coef, kappa)
        shells = np.nonzero(bound >= _PRESCREEN_MARGIN * screen_threshold)[0]
        vals, funcs = [], []
        for s0, s1 in _contiguous_runs(shells):
            vals.append(auxmol.eval_gto("GTOval_sph_deriv1", pts, shls_slice=(s0, s1)))
            funcs.append(np.arange(offset[s0], offset[s1 - 1] + nfunc[s1 - 1]))
        if vals:
            vals = np.concatenate(vals, axis=2)
            funcs = np.concatenate(funcs)
            sig = np.abs(vals).max(axis=(0, 1)) > screen_threshold
            vals, funcs = vals[:, :, sig], funcs[sig]
        else:
            vals, funcs = np.zeros((4, len(pts), 0)), np.zeros(0, dtype=np.int64)
        blocks_ao.append(vals)
        blocks_idx.append(funcs)

    nsig = max(1, max(len(f) for f in blocks_idx))
    ao = np.zeros((nblk, 4, block_size, nsig))
    idx = np.zeros((nblk, nsig), dtype=np.int32)
    for b, (vals, funcs) in enumerate(zip(blocks_ao, blocks_idx)):
        ao[b, :, : vals.shape[1], : len(funcs)] = vals
        idx[b, : len(funcs)] = funcs
    return GridBundle(weights=weights, coords=coords, ao=ao, idx=idx)


def grid_bundle_nbytes(grid: GridBundle) -> int:
    """Bytes held by the arrays of a grid bundle."""
    return int(sum(np.asarray(x).nbytes for x in grid))

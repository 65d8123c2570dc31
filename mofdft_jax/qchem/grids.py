"""Quadrature grid with blocked, screened density-basis values (host side of the grid terms).

:func:`build_grid_bundle` turns a PySCF ``dft.gen_grid.Grids`` (Becke partitioning, NWChem pruning:
PySCF defaults) into a :class:`~mofdft_jax.bundle.GridBundle`:

1. points are ordered by recursive coordinate bisection into spatially compact blocks of
   ``block_size`` points (the last block padded with zero-weight points);
2. for each block only the density-basis functions that are non-negligible there are kept: a cheap
   per-shell radial upper bound (distance from the block to the shell's atom) pre-screens shells,
   the survivors are evaluated with ``auxmol.eval_gto('GTOval_sph_deriv1', coords)`` on the block,
   and a function is kept when max |value| or max |gradient component| over the block exceeds
   ``screen_threshold``;
3. blocks are padded to a common ``nsig`` with zero columns and index 0.

Small molecules (``naux·ngrid·4`` values, 8 bytes each in float64, under
:data:`DENSE_LIMIT_BYTES`) keep every function (``nsig = naux``, no screening). Larger ones are
screened, so the stored values grow linearly with size; no ``ngrid × naux`` array is ever formed
in that mode (values are evaluated in chunks of consecutive blocks of at most ``_CHUNK_BYTES``).

References: spec §4.1 (grid level 2 for ethanol/QM9, level 1 for chignolin), environment_notes §3–4.
"""

from __future__ import annotations

import numpy as np
from pyscf import dft, gto

from mofdft_jax.bundle import GridBundle

#: PySCF's grid levels (``dft.gen_grid`` tabulates radial and angular sizes for 0 to 9).
GRID_LEVELS = tuple(range(10))
#: Automatic choice: keep all functions on all points when the values take less than this.
#: Screening never made a step slower in the measurements (ethanol level 2: 728 MB screened vs
#: 957 MB dense, 0.88× the CPU time per energy+gradient, same build time), so only small
#: molecules (water-sized) stay dense.
DENSE_LIMIT_BYTES = 2.5e8
#: Default points per block (see tests/benchmarks/test_bench_functionals.py for the timing).
DEFAULT_BLOCK_SIZE = 128
#: Default screening threshold on max |ω_μ| and max |∂ω_μ| over a block.
DEFAULT_SCREEN_THRESHOLD = 1e-12
#: Safety factor of the analytic pre-screen (the exact filter decides; this only skips work).
_PRESCREEN_MARGIN = 1e-3
#: Basis values evaluated at once while building (bytes).
_CHUNK_BYTES = 2.0**25


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
    """Per shell: atom, l, smallest exponent, radial prefactor, first function index, nfunc.

    The bounds assume uncontracted shells (the even-tempered basis); for a contracted shell the
    smallest exponent and the sum of |coefficients| give a looser bound.
    """
    nbas = auxmol.nbas
    atom = np.array([auxmol.bas_atom(b) for b in range(nbas)])
    ang = np.array([auxmol.bas_angular(b) for b in range(nbas)])
    alpha = np.array([auxmol.bas_exp(b).min() for b in range(nbas)])
    # radial prefactor: |contraction coefficient| × gto_norm(l, α) (bas_ctr_coeff is unnormalised)
    coef = np.array([np.abs(auxmol.bas_ctr_coeff(b)).sum()
                     * gto.gto_norm(auxmol.bas_angular(b), auxmol.bas_exp(b).min())
                     for b in range(nbas)])
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
    """Upper bound of |ω| and |∇ω| of every shell beyond ``dist`` (per shell) from its atom.

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
                      grids: dft.gen_grid.Grids | None = None,
                      block_multiple: int = 1, function_multiple: int = 1,
                      dtype: str | np.dtype = "float64") -> GridBundle:
    """Quadrature grid of ``mol`` with blocked, screened values of the density basis ``auxmol``.

    Args:
      mol: the molecule (orbital basis irrelevant; defines atoms for the grid).
      auxmol: the density basis (:func:`mofdft_jax.qchem.basis.make_auxmol`).
      level: PySCF grid level (spec §4.1: 2 for ethanol/QM9, 1 for large systems).
      block_size: points per block.
      screen_threshold: keep a function on a block when max |ω| or max |∂ω| there exceeds this.
      dense: ``True`` keeps all functions everywhere (``nsig = naux``), ``False`` screens, ``None``
        picks dense when the ``naux·ngrid·4`` values take < :data:`DENSE_LIMIT_BYTES`.
      grids: a built PySCF ``Grids`` to use instead of building one at ``level`` (same points as an
        existing KS calculation; its zero-weight alignment padding is dropped).
      block_multiple, function_multiple: pad the number of blocks / of significant functions per
        block up to a multiple of these (zero-weight blocks, zero columns with index 0: no grid
        term changes), so that molecules of similar size share compiled solvers.
      dtype: storage type of ``ao``: ``"float64"`` (default) or ``"float32"`` — an explicit
        option: half the bytes, and the grid terms then contract ρ, ∇ρ and the gradient in float32
        (:func:`mofdft_jax.functionals.grid.density_on_grid`; ethanol level 2: 0.75× the time
        of an energy+gradient, energy error ~3e-6 Ha — tests/qchem/test_grids.py).

    Returns:
      A :class:`GridBundle` of NumPy arrays: ``weights (nblk, blk)``, ``coords (nblk, blk, 3)``,
      ``ao (nblk, 4, blk, nsig)`` (``dtype``), ``idx (nblk, nsig)`` (int32).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"grid dtype must be float64 or float32, got {dtype}")
    if grids is None:
        grids = make_grids(mol, level)
    keep = grids.weights != 0.0
    coords_all = np.asarray(grids.coords)[keep]
    weights_all = np.asarray(grids.weights)[keep]
    naux = auxmol.nao_nr()
    npts = len(weights_all)
    if dense is None:
        dense = naux * npts * 4 * dtype.itemsize < DENSE_LIMIT_BYTES

    order = order_points_in_blocks(coords_all, block_size)
    nblk = -(-npts // block_size)
    nblk_pad = _round_up(nblk, block_multiple)
    coords = np.zeros((nblk_pad * block_size, 3))
    coords[:npts] = coords_all[order]
    coords[npts: nblk * block_size] = coords_all[order[-1]]  # the last real block's padding
    coords = coords.reshape(nblk_pad, block_size, 3)
    weights = np.zeros(nblk_pad * block_size)
    weights[:npts] = weights_all[order]
    weights = weights.reshape(nblk_pad, block_size)
    real = (np.arange(nblk * block_size) < npts).reshape(nblk, block_size)

    if dense:
        nsig = _round_up(naux, function_multiple)
        ao = aligned_zeros((nblk_pad, 4, block_size, nsig), dtype)
        per_chunk = max(1, int(_CHUNK_BYTES // (4 * block_size * naux * 8)))
        for b0 in range(0, nblk, per_chunk):
            b1 = min(nblk, b0 + per_chunk)
            vals = auxmol.eval_gto("GTOval_sph_deriv1", coords[b0:b1].reshape(-1, 3))
            ao[b0:b1, :, :, :naux] = vals.reshape(4, b1 - b0, block_size, naux).transpose(1, 0, 2, 3)
        ao[:nblk] *= real[:, None, :, None]
        idx = np.zeros((nblk_pad, nsig), dtype=np.int32)
        idx[:, :naux] = np.arange(naux, dtype=np.int32)
        return GridBundle(weights=weights, coords=coords, ao=ao, idx=idx)

    blocks_ao, blocks_idx = _screen_blocks(auxmol, coords[:nblk], real, screen_threshold,
                                           dtype=dtype)
    nsig = _round_up(max(1, max(len(f) for f in blocks_idx)), function_multiple)
    # np.zeros pages are committed on first write and each block's entry is released once copied,
    # so the peak stays near max(unpadded lists, padded result) rather than their sum
    ao = aligned_zeros((nblk_pad, 4, block_size, nsig), dtype)
    idx = np.zeros((nblk_pad, nsig), dtype=np.int32)
    for b in range(nblk):
        vals, funcs = blocks_ao[b], blocks_idx[b]  # vals: (4, nsig_b, npts_b)
        ao[b, :, : vals.shape[2], : len(funcs)] = vals.transpose(0, 2, 1)
        idx[b, : len(funcs)] = funcs
        blocks_ao[b] = None
    # padding blocks: zero values, indices spread over the used functions (no repeated scatter)
    idx[nblk:] = np.arange(nsig, dtype=np.int32) % (int(idx[:nblk].max()) + 1)
    return GridBundle(weights=weights, coords=coords, ao=ao, idx=idx)


#: Alignment (bytes) at which XLA:CPU uses a host array in place (``jax.device_put(x,
#: may_alias=True)``) instead of copying it.
HOST_ALIGNMENT = 64


def aligned_zeros(shape, dtype=np.float64, alignment: int = HOST_ALIGNMENT) -> np.ndarray:
    """``np.zeros(shape, dtype)`` whose data starts at a multiple of ``alignment`` bytes.

    NumPy aligns large arrays to 16 bytes; XLA:CPU aliases a host buffer only when it is
    64-byte aligned, and otherwise copies it on ``device_put`` (``jnp.asarray`` even made two
    transient copies, measured: peak 3× a 2 GB array). The grid's basis values, the largest array
    of a solve, are allocated so that the device array is the same memory on the CPU.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buffer = np.zeros(nbytes + alignment, dtype=np.uint8)
    offset = (-buffer.ctypes.data) % alignment
    return buffer[offset:offset + nbytes].view(dtype).reshape(shape)


def _round_up(n: int, multiple: int) -> int:
    multiple = max(1, int(multiple))
    return -(-int(n) // multiple) * multiple


def _screen_blocks(auxmol: gto.Mole, coords: np.ndarray, real: np.ndarray,
                   screen_threshold: float, dtype=np.float64):
    """Significant functions of every block, with their values on the block's real points.

    Consecutive blocks (spatial neighbours by construction) are handled in chunks: the analytic
    bound pre-screens shells for the whole chunk, the survivors are evaluated on all its points in a
    few ``eval_gto`` calls, and each block then keeps the functions whose max |value| or
    |gradient component| on its own points exceeds ``screen_threshold``.

    Returns:
      ``(values, functions)``: per block a ``(4, nsig_b, npts_b)`` array of ``dtype`` (PySCF's
      native function-major layout, so no strided copies here; stored in the bundle's type at
      once, so a float32 build never holds float64 copies of every block) and the ``(nsig_b,)``
      function indices.
    """
    nblk, block_size, _ = coords.shape
    atom, ang, alpha, coef, offset, nfunc = _shell_table(auxmol)
    kappa = _angular_constants(auxmol, ang, alpha, coef)
    atom_coords = auxmol.atom_coords()
    naux = auxmol.nao_nr()
    per_chunk = max(1, int(_CHUNK_BYTES // (4 * block_size * naux * 8)))
    blocks_ao, blocks_idx = [], []
    for b0 in range(0, nblk, per_chunk):
        b1 = min(nblk, b0 + per_chunk)
        mask = real[b0:b1].reshape(-1)
        pts = coords[b0:b1].reshape(-1, 3)[mask]
        # per block: distance from each atom to the nearest real point of the block
        dist = np.sqrt(((coords[b0:b1, :, None, :] - atom_coords) ** 2).sum(-1))
        dist[~real[b0:b1]] = np.inf
        dmin = dist.min(axis=1)  # (nb, natm)
        bound = _shell_bounds(dmin[:, atom], ang, alpha, coef, kappa)  # (nb, nbas)
        shells = np.nonzero((bound >= _PRESCREEN_MARGIN * screen_threshold).any(axis=0))[0]
        vals, funcs = [], []
        for s0, s1 in _merged_runs(shells, nfunc):
            # eval_gto returns a (4, npts, nf) view of a C-ordered (4, nf, npts) buffer
            vals.append(auxmol.eval_gto("GTOval_sph_deriv1", pts, shls_slice=(s0, s1))
                        .transpose(0, 2, 1))
            funcs.append(np.arange(offset[s0], offset[s1 - 1] + nfunc[s1 - 1]))
        if not vals:
            vals, funcs = np.zeros((4, 0, len(pts))), np.zeros(0, dtype=np.int64)
        elif len(vals) == 1:
            vals, funcs = np.ascontiguousarray(vals[0]), funcs[0]
        else:
            vals, funcs = np.concatenate(vals, axis=1), np.concatenate(funcs)
        amax = np.maximum(vals.max(axis=0), -vals.min(axis=0))  # (nsel, npts)
        counts = real[b0:b1].sum(axis=1)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        block_max = np.maximum.reduceat(amax, starts, axis=1)  # (nsel, nb)
        for j, (p0, n) in enumerate(zip(starts.tolist(), counts.tolist())):
            sig = block_max[:, j] > screen_threshold
            blocks_ao.append(vals[:, sig, p0:p0 + n].astype(dtype, copy=False))
            blocks_idx.append(funcs[sig])
    return blocks_ao, blocks_idx


def _merged_runs(shells: np.ndarray, nfunc: np.ndarray, max_gap: int = 32) -> list[tuple[int, int]]:
    """Contiguous shell ranges covering ``shells``; gaps of ≤ ``max_gap`` functions are bridged
    (evaluating a few extra functions is cheaper than another ``eval_gto`` call)."""
    runs = _contiguous_runs(shells)
    merged: list[list[int]] = []
    for s0, s1 in runs:
        if merged and nfunc[merged[-1][1]:s0].sum() <= max_gap:
            merged[-1][1] = s1
        else:
            merged.append([s0, s1])
    return [(a, b) for a, b in merged]


def grid_bundle_nbytes(grid: GridBundle) -> int:
    """Bytes held by the arrays of a grid bundle."""
    return int(sum(np.asarray(x).nbytes for x in grid))

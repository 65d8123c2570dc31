"""Local symmetric square root of the density-basis overlap, for molecules too large for eigh.

The natural reparametrisation p′ = W^{1/2} p (spec §2.2, :mod:`~mofdft_jax.density.adapter`) needs
the symmetric square root of the overlap W_μν = ⟨ω_μ|ω_ν⟩. For a ~700-atom protein W is
49k × 49k (19 GB), and neither it nor its eigendecomposition fits in 24 GiB. W^{1/2} is, however,
local: its rows decay with the distance between the atoms of μ and ν. The local root replaces every
atom's rows by those of the square root of the overlap of the atom's neighbourhood:

1. atoms are grouped into centres (by default each heavy atom with the hydrogens bonded to it, so
   one eigendecomposition serves the group; :func:`hydrogen_groups`);
2. the neighbourhood N(g) of a centre g is every atom within ``radius`` Bohr of an atom of g;
3. W_N = W restricted to the functions of N(g), W_N = Q diag(s²) Qᵀ, and the rows of the
   centre's atoms of W_N^{1/2} = Q diag(s) Qᵀ are kept (columns: the functions of N(g));
4. the row blocks are symmetrised, Ŝ_ab = ½(S_ab + S_baᵀ) (one of the two when only one exists).

Ŝ is exact when every neighbourhood covers the molecule, and converges to W^{1/2} as the radius
grows (measured on Gly₈, sto-3g orbitals: relative error of Ŝp for a MINAO density 7.9·10⁻⁴ at
6 Bohr, 1.7·10⁻⁴ at 8 Bohr; ``tests/density/test_local_root.py``). It is used consistently: the
forward map is p′ = D Ŝ p, and every inverse (p = Ŝ⁻¹ Dᵀ p′, ∇_{p′} = D Ŝ⁻¹ ∇_p) is the exact
inverse of Ŝ, by conjugate gradients on Ŝ (symmetric positive definite; tolerance 10⁻¹² relative),
never a separately truncated W^{-1/2} (whose local version converges much more slowly: 2.5·10⁻²
at 6 Bohr on Gly₈, so Ŝ⁻¹_local Ŝ would be far from the identity).

Storage is a padded block-row layout (:class:`BlockRows`): each atom's rows with the column indices
of its neighbourhood; rows of equal count and similar width share a bucket. Memory and the cost of
one product are O(naux · neighbourhood); the set-up is one eigendecomposition per centre.
Building the neighbourhood overlaps needs PySCF and is done on the host
(:func:`mofdft_jax.qchem.coulomb_blocks.build_local_overlap_root`); this module takes any callable
that returns them (:func:`build_local_overlap_root`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mofdft_jax.types import Array, Float, Int

#: Default neighbourhood radius, Bohr.
DEFAULT_RADIUS = 8.0
#: Relative tolerance of the conjugate-gradient inverse Ŝ⁻¹.
CG_TOL = 1e-12
#: Buckets per row count in the block-row layout.
DEFAULT_MAX_BUCKETS = 4


class RowBucket(NamedTuple):
    """Row blocks with a common row count r and padded column count K.

    Attributes:
      cols: ``(nb, K)`` column indices (padding: 0).
      vals: ``(nb, r, K)`` values (padding: 0).
    """

    cols: Int[Array, "nb k"]
    vals: Float[Array, "nb r k"]


class BlockRows(NamedTuple):
    """A sparse ``(n, n)`` matrix stored as padded row blocks (a pytree of arrays).

    Attributes:
      buckets: tuple of :class:`RowBucket`.
      order: ``(n,)`` position of row i in the concatenation of the buckets' row outputs.
    """

    buckets: tuple
    order: Int[Array, "n"]

    def matvec(self, x: Float[Array, "n"]) -> Float[Array, "n"]:
        """A x, ``(n,)``."""
        outs = [jnp.einsum("brk,bk->br", b.vals, x[b.cols]).reshape(-1) for b in self.buckets]
        return jnp.concatenate(outs)[self.order]


class LocalOverlapRoot(NamedTuple):
    """The local square root Ŝ ≈ W^{1/2} of the overlap (module docstring); a pytree.

    Attributes:
      sqrt: Ŝ as :class:`BlockRows` (symmetric).
      radius: ``()`` neighbourhood radius in Bohr (information; not used by the maps).
    """

    sqrt: BlockRows
    radius: Float[Array, ""]

    def apply(self, x: Float[Array, "naux"], power: float) -> Float[Array, "naux"]:
        """Ŝ x for ``power`` = ½, Ŝ⁻¹ x (conjugate gradients) for ``power`` = −½."""
        if power == 0.5:
            return self.sqrt.matvec(x)
        if power == -0.5:
            return solve_local_root(self, x)
        raise ValueError(f"the local overlap root supports powers ±1/2, got {power}")


def solve_local_root(root: LocalOverlapRoot, y: Float[Array, "naux"], *, tol: float = CG_TOL,
                     maxiter: int = 2000) -> Float[Array, "naux"]:
    """x = Ŝ⁻¹ y by conjugate gradients (Ŝ symmetric positive definite).

    Differentiable: ``jax.scipy.sparse.linalg.cg`` differentiates through an implicit solve, so the
    VJP is another solve with Ŝ."""
    x, _ = jax.scipy.sparse.linalg.cg(root.sqrt.matvec, y, tol=tol, atol=0.0, maxiter=maxiter)
    return x


# ----------------------------------------------------------------------------------------------
# host-side construction (NumPy)
# ----------------------------------------------------------------------------------------------

def hydrogen_groups(atom_numbers: np.ndarray, coords: np.ndarray) -> list[np.ndarray]:
    """Centres of the local root: each heavy atom with the hydrogens nearest to it (every H joins
    its nearest heavy atom; a molecule without heavy atoms gives one group per atom)."""
    z = np.asarray(atom_numbers)
    heavy = np.nonzero(z > 1)[0]
    if len(heavy) == 0:
        return [np.array([a]) for a in range(len(z))]
    members: dict[int, list[int]] = {int(a): [int(a)] for a in heavy}
    for h in np.nonzero(z == 1)[0]:
        d = np.linalg.norm(coords[heavy] - coords[h], axis=-1)
        members[int(heavy[np.argmin(d)])].append(int(h))
    return [np.array(sorted(v)) for _, v in sorted(members.items())]


def bucket_bounds(widths: np.ndarray, max_buckets: int) -> list[tuple[int, int]]:
    """Split ascending ``widths`` into ≤ ``max_buckets`` contiguous groups minimising the padded
    size Σ len(group)·max(group) (dynamic programming over ≤ 64 quantile boundaries)."""
    n = len(widths)
    cand = np.unique(np.concatenate([np.searchsorted(widths, np.quantile(widths, np.linspace(
        0, 1, 65)[1:-1]), side="right"), [n]]))
    cand = cand[(cand > 0) & (cand <= n)]
    m = len(cand)
    best = np.full((max_buckets, m), np.inf)
    back = np.zeros((max_buckets, m), dtype=np.int64)
    best[0] = cand * widths[cand - 1]
    for b in range(1, max_buckets):
        for i in range(m):
            for j in range(i):
                cost = best[b - 1, j] + (cand[i] - cand[j]) * widths[cand[i] - 1]
                if cost < best[b, i]:
                    best[b, i], back[b, i] = cost, j
    b = int(np.argmin(best[:, m - 1]))
    bounds, i = [], m - 1
    while True:
        start = cand[back[b, i]] if b > 0 else 0
        bounds.append((int(start), int(cand[i])))
        if b == 0:
            break
        i, b = back[b, i], b - 1
    return bounds[::-1]


def pack_block_rows(blocks: Sequence[tuple[int, np.ndarray, np.ndarray]], n: int, *,
                    max_buckets: int = DEFAULT_MAX_BUCKETS, as_jax: bool = True) -> BlockRows:
    """Pack row blocks ``(first_row, cols (K,), vals (r, K))`` covering rows 0…n−1 exactly once
    into :class:`BlockRows` (buckets by row count, then by width with optimal padding)."""
    by_rows: dict[int, list] = {}
    for row0, cols, vals in blocks:
        by_rows.setdefault(vals.shape[0], []).append((row0, cols, vals))
    order = np.full(n, -1, dtype=np.int64)
    buckets, position = [], 0
    for nrow in sorted(by_rows):
        items = sorted(by_rows[nrow], key=lambda it: len(it[1]))
        widths = np.array([max(len(it[1]), 1) for it in items])
        for start, stop in bucket_bounds(widths, max_buckets):
            group = items[start:stop]
            kpad = int(widths[stop - 1])
            cols = np.zeros((len(group), kpad), dtype=np.int32)
            vals = np.zeros((len(group), nrow, kpad))
            for i, (row0, c, v) in enumerate(group):
                cols[i, :len(c)] = c
                vals[i, :, :len(c)] = v
                order[row0:row0 + nrow] = position + i * nrow + np.arange(nrow)
            position += len(group) * nrow
            buckets.append((cols, vals))
    if position != n or np.any(order < 0):
        raise ValueError(f"row blocks cover {position} rows of {n} (each row exactly once)")
    if as_jax:
        put = jax.device_put
        return BlockRows(buckets=tuple(RowBucket(put(c), put(v)) for c, v in buckets),
                         order=put(order.astype(np.int32)))
    return BlockRows(buckets=tuple(RowBucket(c, v) for c, v in buckets),
                     order=order.astype(np.int32))


def build_local_overlap_root(aux_atom: np.ndarray, coords: np.ndarray,
                             overlap_block: Callable[[np.ndarray], np.ndarray], *,
                             radius: float = DEFAULT_RADIUS,
                             groups: Sequence[np.ndarray] | None = None,
                             atom_numbers: np.ndarray | None = None,
                             max_buckets: int = DEFAULT_MAX_BUCKETS, as_jax: bool = True,
                             stats: dict | None = None) -> LocalOverlapRoot:
    """Build the local square root Ŝ of the overlap (module docstring), on the host.

    Args:
      aux_atom: ``(naux,)`` atom of each density-basis function (functions of an atom contiguous,
        atoms in order).
      coords: ``(natm, 3)`` Bohr.
      overlap_block: ``fn(atoms) -> (n, n)`` overlap of the functions of the sorted atom indices
        ``atoms`` (in function order), e.g. a submatrix of a dense W or PySCF ``int1e_ovlp`` on a
        sub-molecule.
      radius: neighbourhood radius, Bohr.
      groups: centres (atom index arrays); default :func:`hydrogen_groups` (needs
        ``atom_numbers``) or one atom each.
      stats: optional dict filled with ``n_centres``, ``max_neighbourhood``,
        ``mean_neighbourhood``, ``nnz``, ``bytes``.
    """
    aux_atom = np.asarray(aux_atom)
    coords = np.asarray(coords, dtype=np.float64)
    natm, naux = len(coords), len(aux_atom)
    starts = np.searchsorted(aux_atom, np.arange(natm + 1))
    if groups is None:
        groups = (hydrogen_groups(atom_numbers, coords) if atom_numbers is not None
                  else [np.array([a]) for a in range(natm)])
    dist = np.linalg.norm(coords[:, None, :] - coords[None, :, :], axis=-1)
    blocks: dict[tuple[int, int], np.ndarray] = {}
    partners: list[set] = [set() for _ in range(natm)]
    sizes = []
    for group in groups:
        group = np.asarray(group)
        nbr = np.nonzero((dist[group] < radius).any(axis=0))[0]
        idx = np.concatenate([np.arange(starts[b], starts[b + 1]) for b in nbr])
        sizes.append(len(idx))
        w = np.asarray(overlap_block(nbr), dtype=np.float64)
        vals, vecs = np.linalg.eigh(0.5 * (w + w.T))
        if vals[0] <= 0:
            raise ValueError(f"overlap of the neighbourhood of atoms {group.tolist()} is not "
                             f"positive definite (smallest eigenvalue {vals[0]:.3e})")
        local = np.searchsorted(idx, np.arange(naux))  # position of function in idx
        for a in group:
            rows = local[starts[a]:starts[a + 1]]
            rows_sqrt = (vecs[rows] * np.sqrt(vals)) @ vecs.T  # (n_a, len(idx))
            for b in nbr:
                cols = local[starts[b]:starts[b + 1]]
                blocks[(int(a), int(b))] = rows_sqrt[:, cols]
                partners[int(a)].add(int(b))
                partners[int(b)].add(int(a))
    row_blocks = []
    nnz = 0
    for a in range(natm):
        cols, vals = [], []
        for b in sorted(partners[a]):
            ab, ba = blocks.get((a, b)), blocks.get((b, a))
            sym = ab if ba is None else (ba.T if ab is None else 0.5 * (ab + ba.T))
            cols.append(np.arange(starts[b], starts[b + 1]))
            vals.append(sym)
        cols = np.concatenate(cols).astype(np.int32)
        vals = np.concatenate(vals, axis=1)
        nnz += vals.size
        row_blocks.append((int(starts[a]), cols, vals))
    del blocks
    sqrt = pack_block_rows(row_blocks, naux, max_buckets=max_buckets, as_jax=as_jax)
    if stats is not None:
        stats.update({"n_centres": len(groups), "max_neighbourhood": int(max(sizes)),
                      "mean_neighbourhood": float(np.mean(sizes)), "nnz": int(nnz),
                      "bytes": int(sum(np.asarray(b.vals).nbytes + np.asarray(b.cols).nbytes
                                       for b in sqrt.buckets)), "radius": float(radius)})
    radius_arr = jnp.asarray(float(radius)) if as_jax else np.asarray(float(radius))
    return LocalOverlapRoot(sqrt=sqrt, radius=radius_arr)


def local_overlap_root_from_dense(overlap: np.ndarray, aux_atom: np.ndarray, coords: np.ndarray,
                                  **options) -> LocalOverlapRoot:
    """:func:`build_local_overlap_root` with neighbourhood blocks cut from a dense overlap."""
    overlap = np.asarray(overlap, dtype=np.float64)
    aux_atom = np.asarray(aux_atom)

    def block(atoms):
        idx = np.nonzero(np.isin(aux_atom, atoms))[0]
        return overlap[np.ix_(idx, idx)]

    return build_local_overlap_root(aux_atom, coords, block, **options)


def block_rows_to_dense(rows: BlockRows) -> np.ndarray:
    """The ``(n, n)`` matrix of a :class:`BlockRows` (host; tests and diagnostics only)."""
    order = np.asarray(rows.order)
    n = len(order)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(n)
    dense = np.zeros((n, n))
    position = 0
    for bucket in rows.buckets:
        cols, vals = np.asarray(bucket.cols), np.asarray(bucket.vals)
        nb, nrow, _ = vals.shape
        row_idx = inverse[position:position + nb * nrow].reshape(nb, nrow)
        position += nb * nrow
        np.add.at(dense, (row_idx[:, :, None], cols[:, None, :]), vals)
    return dense

"""Host builders of the compressed Coulomb operator (exact near field + multipole far field).

Builds :class:`~mofdft_jax.functionals.coulomb_fmm.CompressedCoulomb`, W̃ = QᵀTQ + Δ, for large
molecules whose dense W̃ (naux² floats) does not fit in memory (issue 8; environment_notes §8:
49,088 functions, 19.3 GB). The pieces:

**Multipole moments (Q).** A libcint spherical shell of degree l and primitive exponents α_i is
ω_m(r) = Σ_i c_i S_lm(r − A) e^{−α_i|r − A|²}, with S_lm the real solid harmonic of PySCF's
``cart2sph`` (normalisation included, e.g. S_00 = 1/(2√π)). Because S_lm is harmonic,
S_lm(r) e^{−αr²} = (−2α)^{−l} S_lm(∇) e^{−αr²}, so outside its overlap range ω_m is the point
multipole (l, m) of strength

.. math::  m_μ = Σ_i c_i (π/α_i)^{3/2} / (2α_i)^l .

**Interaction tensors (T).** For functions at A and B (R = A − B) the Coulomb integral of two such
multipoles is m_μ m_ν (−1)^{l_ν} [S_μ S_ν](∇) (1/R), a derivative of degree L = l_μ + l_ν of 1/R,
evaluated with Hobson's theorem for a homogeneous polynomial P of degree L:

.. math::  P(∇)\\frac1R = (−1)^L (2L−1)!! \\sum_k \\frac{(−1)^k (Δ^k P)(\\hat R)}
           {2^k k! \\prod_{j=1}^{k}(2L−2j+1)} \\; \\frac{1}{R^{L+1}} .

The coefficients of (Δ^k P)(R̂) over the monomials of R̂ are computed once (exact rational
arithmetic on the ``cart2sph`` values), so T for all atom pairs is one matrix product.
(libcint's ``int2c2e`` between very tight shells, the obvious alternative, loses up to 10⁻³
relative accuracy for g–g pairs at exponents ≳ 30: measured while writing this module.)

**Near field (Δ).** Two Gaussian shells interact as their point multipoles up to terms of the form
S(∇)[erfc(√ρ R)/R], ρ = αβ/(α+β); relative to the multipole value these are bounded by
f_L(x) = erfc(x) + e^{−x²} Σ_{k=1}^{L} (2x)^{2k−1}/(√π k!), x = √ρ R
(:func:`multipole_deviation_bound`; L = 0 is exact, the higher orders are the leading terms of the
derivatives and over-estimate them). Shell pairs with f_L(x) ≥ ``tol`` (default 10⁻¹³, e.g.
R ≲ 13.2 Bohr for two s shells of exponent 0.32) keep the exact correction
Δ = (ω_μ|ω_ν) − m_μ m_ν T_μν; functions of the same atom keep their exact block. The exact
integrals come from PySCF ``int2c2e`` one atom row block at a time (``shls_slice`` over the
contiguous range of shells of the atom's neighbours), so the memory is bounded by the near field
itself and the time is at most that of the dense build (~50 s on 2 cores for 49,088 functions).
"""

from __future__ import annotations

import functools
import math
import time
from fractions import Fraction

import numpy as np
from pyscf import gto
from scipy.special import erfc, gammaln

from mofdft_jax.density.local_root import pack_block_rows
from mofdft_jax.functionals.coulomb_fmm import CompressedCoulomb, NearBucket

#: Default bound on the relative deviation of a dropped Gaussian pair from its multipole value.
DEFAULT_TOL = 1e-13
#: Largest angular momentum of a density-basis shell (even-tempered basis: g functions).
MAX_L = 4
#: Near-field buckets per angular momentum (each is one gather + batched product in the compiled
#: code: fewer buckets compile faster, more buckets pad less).
DEFAULT_MAX_BUCKETS = 6


# ----------------------------------------------------------------------------------------------
# cutoffs
# ----------------------------------------------------------------------------------------------

def multipole_deviation_bound(L: int, x):
    """f_L(x) = erfc(x) + e^{−x²} Σ_{k=1}^{L} (2x)^{2k−1}/(√π k!), x = √ρ R (module docstring).

    Bound on |(ω_μ|ω_ν) − multipole value| / |multipole value scale| for two Gaussian shells of
    total angular momentum L = l_μ + l_ν.
    """
    x = np.asarray(x, dtype=np.float64)
    out = erfc(x)
    with np.errstate(divide="ignore"):
        logx2 = np.log(2.0 * x)
    for k in range(1, L + 1):
        out = out + np.exp(-x * x + (2 * k - 1) * logx2 - gammaln(k + 1)) / math.sqrt(math.pi)
    return out


@functools.lru_cache(maxsize=64)
def multipole_cutoff_x(L: int, tol: float = DEFAULT_TOL) -> float:
    """The x_c with f_L(x_c) = tol: shell pairs with √ρ R ≥ x_c interact as point multipoles."""
    lo, hi = 0.0, 50.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if multipole_deviation_bound(L, mid) > tol:
            lo = mid
        else:
            hi = mid
    return hi


def shell_pair_cutoff(l_i, alpha_i, l_j, alpha_j, tol: float = DEFAULT_TOL):
    """Distance (Bohr) beyond which shells (l_i, α_i) and (l_j, α_j) interact as point multipoles:
    R_c = x_c(l_i + l_j) / √(α_i α_j / (α_i + α_j)). Broadcasts over arrays."""
    l_i, l_j = np.asarray(l_i), np.asarray(l_j)
    xc = np.array([multipole_cutoff_x(L, tol) for L in range(2 * MAX_L + 1)])
    rho = np.asarray(alpha_i) * np.asarray(alpha_j) / (np.asarray(alpha_i) + np.asarray(alpha_j))
    return xc[l_i + l_j] / np.sqrt(rho)


# ----------------------------------------------------------------------------------------------
# real solid harmonics and the multipole interaction tensor
# ----------------------------------------------------------------------------------------------

def cartesian_exponents(l: int) -> list[tuple[int, int, int]]:
    """PySCF's order of the Cartesian monomials x^a y^b z^c of degree l (xx, xy, xz, yy, …)."""
    return [(lx, ly, l - lx - ly) for lx in range(l, -1, -1) for ly in range(l - lx, -1, -1)]


def _monomials(max_degree: int) -> list[tuple[int, int, int]]:
    return [m for d in range(max_degree + 1) for m in cartesian_exponents(d)]


def _poly_mul(p, q):
    out: dict = {}
    for (a1, b1, c1), x in p.items():
        for (a2, b2, c2), y in q.items():
            key = (a1 + a2, b1 + b2, c1 + c2)
            out[key] = out.get(key, 0) + x * y
    return out


def _poly_laplacian(p):
    out: dict = {}
    for (a, b, c), x in p.items():
        for (k, e) in ((0, a), (1, b), (2, c)):
            if e >= 2:
                key = [a, b, c]
                key[k] -= 2
                key = tuple(key)
                out[key] = out.get(key, 0) + x * e * (e - 1)
    return out


def _solid_harmonic(l: int, m: int) -> dict:
    """S_lm as {monomial: coefficient} from PySCF's ``cart2sph`` (normalisation included)."""
    c2s = gto.cart2sph(l)  # (ncart, 2l+1)
    return {mono: Fraction(float(c2s[i, m])) for i, mono in enumerate(cartesian_exponents(l))
            if c2s[i, m] != 0.0}


def _double_factorial(n: int) -> int:
    return 1 if n <= 0 else n * _double_factorial(n - 2)


@functools.lru_cache(maxsize=4)
def interaction_coefficients(lmax: int = MAX_L) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients of the point multipole–multipole interaction tensor.

    Returns ``(coef, order)``: ``coef`` ``(ncomp, ncomp, nmono)`` and ``order`` ``(ncomp, ncomp)``
    with ncomp = (lmax+1)² components (l, m) in PySCF order (index l² + m) and nmono the monomials
    of degree ≤ 2·lmax (:func:`_monomials` order), such that for unit moments at A and B and
    R = A − B = r u,

    .. math::  T_{ij}(R) = r^{−(order_{ij}+1)} Σ_n coef_{ijn} u^{mono_n},

    i.e. (−1)^{l_j} [S_i S_j](∇)(1/R) by Hobson's theorem (module docstring).
    """
    monos = _monomials(2 * lmax)
    mono_index = {m: i for i, m in enumerate(monos)}
    comps = [(l, m) for l in range(lmax + 1) for m in range(2 * l + 1)]
    harmonics = [_solid_harmonic(l, m) for (l, m) in comps]
    ncomp = len(comps)
    coef = np.zeros((ncomp, ncomp, len(monos)))
    order = np.zeros((ncomp, ncomp), dtype=np.int64)
    for i, (li, _) in enumerate(comps):
        for j, (lj, _) in enumerate(comps):
            L = li + lj
            order[i, j] = L
            poly = _poly_mul(harmonics[i], harmonics[j])
            prefactor = Fraction((-1) ** lj * (-1) ** L * _double_factorial(2 * L - 1))
            denom = Fraction(1)
            for k in range(L // 2 + 1):
                if k > 0:
                    poly = _poly_laplacian(poly)
                    denom *= 2 * k * (2 * L - 2 * k + 1)
                factor = prefactor * (-1) ** k / denom
                for mono, x in poly.items():
                    coef[i, j, mono_index[mono]] += float(factor * x)
    return coef, order


def _monomial_features(u: np.ndarray, max_degree: int) -> np.ndarray:
    """``(n, nmono)`` values u_x^a u_y^b u_z^c of the monomials of degree ≤ max_degree."""
    powers = u[:, :, None] ** np.arange(max_degree + 1)[None, None, :]  # (n, 3, d+1)
    monos = _monomials(max_degree)
    a, b, c = (np.array([m[k] for m in monos]) for k in range(3))
    return powers[:, 0, a] * powers[:, 1, b] * powers[:, 2, c]


def multipole_interaction_tensor(vectors: np.ndarray, lmax: int = MAX_L) -> np.ndarray:
    """``(n, ncomp, ncomp)`` interaction tensors T(R) of unit point multipoles for R = A − B.

    T_ij(R) is the Coulomb energy of the real solid-harmonic multipole component i at A with
    component j at B, normalised to the moments of :func:`multipole_moments` (so that
    (ω_μ|ω_ν) → m_μ m_ν T_{k(μ) k(ν)}(R) far apart). ``vectors`` ``(n, 3)`` must be non-zero.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    coef, order = interaction_coefficients(lmax)
    r = np.linalg.norm(vectors, axis=-1)
    u = vectors / r[:, None]
    feats = _monomial_features(u, 2 * lmax)
    ncomp = coef.shape[0]
    angular = (feats @ coef.reshape(ncomp * ncomp, -1).T).reshape(-1, ncomp, ncomp)
    return angular * r[:, None, None] ** (-(order[None] + 1.0))


# ----------------------------------------------------------------------------------------------
# moments and the far field
# ----------------------------------------------------------------------------------------------

def multipole_moments(auxmol: gto.Mole) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which atom-centred multipole component each density-basis function feeds, and how much.

    Returns ``(mult_index, mult_weight, mult_offsets)``: ``(naux,)`` component index (atom a's
    components start at ``mult_offsets[a]``; component (l, m) is at offset l² + m), ``(naux,)``
    moment m_μ = Σ_i c_i (π/α_i)^{3/2}/(2α_i)^l, and ``(natm + 1,)`` offsets (atom a carries
    (lmax_a + 1)² components, lmax_a its largest shell degree).
    """
    lmax = np.zeros(auxmol.natm, dtype=np.int64)
    for b in range(auxmol.nbas):
        lmax[auxmol.bas_atom(b)] = max(lmax[auxmol.bas_atom(b)], auxmol.bas_angular(b))
    offsets = np.concatenate([[0], np.cumsum((lmax + 1) ** 2)])
    index, weight = [], []
    for b in range(auxmol.nbas):
        l, atom = auxmol.bas_angular(b), auxmol.bas_atom(b)
        alpha = auxmol.bas_exp(b)
        coeff = auxmol._libcint_ctr_coeff(b)  # (nprim, nctr), primitive norms included
        moments = ((np.pi / alpha) ** 1.5 / (2.0 * alpha) ** l) @ coeff  # (nctr,)
        for moment in moments:
            index.append(offsets[atom] + l * l + np.arange(2 * l + 1))
            weight.append(np.full(2 * l + 1, moment))
    return (np.concatenate(index).astype(np.int32), np.concatenate(weight),
            offsets.astype(np.int64))


def build_far_field(coords: np.ndarray, mult_offsets: np.ndarray) -> np.ndarray:
    """``(nmult, nmult)`` interaction tensors between all pairs of different atoms (zero blocks
    within an atom); atom a's components are ``mult_offsets[a]:mult_offsets[a+1]``."""
    coords = np.asarray(coords, dtype=np.float64)
    natm = len(coords)
    ncomp = np.diff(mult_offsets)
    nmult = int(mult_offsets[-1])
    lmax_all = int(round(math.sqrt(ncomp.max()))) - 1
    comp_atom = np.repeat(np.arange(natm), ncomp)
    comp_local = np.arange(nmult) - mult_offsets[comp_atom]
    far = np.zeros((nmult, nmult))
    for a in range(natm):
        vec = coords[a][None, :] - coords
        vec[a] = 1.0  # placeholder, zeroed below
        blocks = multipole_interaction_tensor(vec, lmax_all)  # (natm, ncomp, ncomp)
        blocks[a] = 0.0
        rows = slice(mult_offsets[a], mult_offsets[a + 1])
        far[rows] = blocks[comp_atom, :ncomp[a], comp_local].T
    return far


# ----------------------------------------------------------------------------------------------
# the operator
# ----------------------------------------------------------------------------------------------

def _shell_tables(auxmol: gto.Mole):
    """Per function: atom, shell degree, most diffuse exponent of its shell; per shell: first
    function and the function count."""
    ao_loc = auxmol.ao_loc_nr()
    naux = int(ao_loc[-1])
    f_atom = np.empty(naux, dtype=np.int64)
    f_l = np.empty(naux, dtype=np.int64)
    f_alpha = np.empty(naux)
    for b in range(auxmol.nbas):
        sl = slice(ao_loc[b], ao_loc[b + 1])
        f_atom[sl] = auxmol.bas_atom(b)
        f_l[sl] = auxmol.bas_angular(b)
        f_alpha[sl] = auxmol.bas_exp(b).min()
    return ao_loc, f_atom, f_l, f_alpha


def build_compressed_coulomb(auxmol: gto.Mole, *, tol: float = DEFAULT_TOL,
                             max_buckets: int = DEFAULT_MAX_BUCKETS,
                             as_jax: bool = True, stats: dict | None = None) -> CompressedCoulomb:
    """Build W̃ = QᵀTQ + Δ of the density basis ``auxmol`` (module docstring).

    Args:
      auxmol: the density-basis molecule (:func:`mofdft_jax.qchem.basis.make_auxmol`).
      tol: bound on the relative deviation of a dropped shell pair from its multipole value.
      max_buckets: near-field buckets per angular momentum (padding chosen optimally).
      as_jax: return JAX arrays (float64); else NumPy (host tests).
      stats: optional dict filled with sizes and timings (``near_nnz``, ``near_bytes``,
        ``far_bytes``, ``n_buckets``, ``far_s``, ``near_s``, ``wall_s``).

    Memory: the far field (Σ_a (lmax_a+1)²)² floats plus the near field; never naux².
    """
    t0 = time.perf_counter()
    coords = auxmol.atom_coords()
    natm = auxmol.natm
    ao_loc, f_atom, f_l, f_alpha = _shell_tables(auxmol)
    naux = int(ao_loc[-1])
    mult_index, mult_weight, mult_offsets = multipole_moments(auxmol)
    far = build_far_field(coords, mult_offsets)
    t_far = time.perf_counter() - t0

    atom_shells = [[] for _ in range(natm)]
    for b in range(auxmol.nbas):
        atom_shells[auxmol.bas_atom(b)].append(b)
    atom_funcs = np.array([[ao_loc[s[0]], ao_loc[s[-1] + 1]] for s in atom_shells])
    dist = np.linalg.norm(coords[:, None, :] - coords[None, :, :], axis=-1)
    alpha_min = f_alpha.min()

    row_blocks: list[tuple[int, np.ndarray, np.ndarray]] = []
    nnz = 0
    for a in range(natm):
        shells = atom_shells[a]
        # neighbours: atoms that some shell of a may reach with the most diffuse partner
        reach = max(float(shell_pair_cutoff(auxmol.bas_angular(s), auxmol.bas_exp(s).min(),
                                            MAX_L, alpha_min, tol)) for s in shells)
        nbr = np.nonzero(dist[a] < reach)[0]
        j0 = min(atom_shells[b][0] for b in nbr)
        j1 = max(atom_shells[b][-1] for b in nbr) + 1
        c0, c1 = ao_loc[j0], ao_loc[j1]
        exact = auxmol.intor("int2c2e", shls_slice=(shells[0], shells[-1] + 1, j0, j1))
        r0 = atom_funcs[a, 0]
        n_a = atom_funcs[a, 1] - r0
        cols_all = np.arange(c0, c1)
        k_rows = mult_index[r0:r0 + n_a]
        multipole = (mult_weight[r0:r0 + n_a, None] * far[np.ix_(k_rows, mult_index[c0:c1])]
                     * mult_weight[None, c0:c1])
        delta = exact - multipole
        col_dist = dist[a, f_atom[c0:c1]]
        for s in shells:
            l = auxmol.bas_angular(s)
            cut = shell_pair_cutoff(l, auxmol.bas_exp(s).min(), f_l[c0:c1], f_alpha[c0:c1], tol)
            keep = np.nonzero(col_dist < cut)[0]
            rows = slice(ao_loc[s] - r0, ao_loc[s + 1] - r0)
            row_blocks.append(
                (int(ao_loc[s]), cols_all[keep].astype(np.int32), delta[rows][:, keep]))
            nnz += (2 * l + 1) * len(keep)
    t_near = time.perf_counter() - t0 - t_far
    # shells of equal l (2l+1 rows) bucketed by column count, optimal padding: the same packing
    # as the local overlap root
    packed = pack_block_rows(row_blocks, naux, max_buckets=max_buckets, as_jax=False)
    del row_blocks
    buckets, near_order = [(b.cols, b.vals) for b in packed.buckets], packed.order
    conv = _to_jax if as_jax else (lambda x, dtype=None: np.asarray(x, dtype=dtype))
    near = tuple(NearBucket(cols=conv(c, np.int32), vals=conv(v, np.float64)) for c, v in buckets)
    op = CompressedCoulomb(mult_index=conv(mult_index, np.int32),
                           mult_weight=conv(mult_weight, np.float64),
                           far=conv(far, np.float64), near=near,
                           near_order=conv(near_order, np.int32))
    if stats is not None:
        near_bytes = sum(c.nbytes + v.nbytes for c, v in buckets)
        stats.update({"naux": naux, "nmult": int(mult_offsets[-1]), "near_nnz": int(nnz),
                      "near_padded": int(sum(v.size for _, v in buckets)),
                      "near_bytes": int(near_bytes), "far_bytes": int(far.nbytes),
                      "n_buckets": len(buckets), "far_s": t_far, "near_s": t_near,
                      "wall_s": time.perf_counter() - t0, "tol": tol})
    return op


def _to_jax(x, dtype=None):
    import jax

    from mofdft_jax.config import ensure_x64

    ensure_x64()
    return jax.device_put(np.asarray(x, dtype=dtype))  # no per-shape compile (jnp.asarray has one)


def compressed_coulomb_to_dense(op: CompressedCoulomb) -> np.ndarray:
    """The ``(naux, naux)`` matrix an operator represents (host; tests and diagnostics only)."""
    idx = np.asarray(op.mult_index)
    w = np.asarray(op.mult_weight)
    dense = w[:, None] * np.asarray(op.far)[np.ix_(idx, idx)] * w[None, :]
    order = np.asarray(op.near_order)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    position = 0
    for bucket in op.near:
        cols, vals = np.asarray(bucket.cols), np.asarray(bucket.vals)
        nb, nrow, _ = vals.shape
        rows = inverse[position:position + nb * nrow].reshape(nb, nrow)
        position += nb * nrow
        np.add.at(dense, (rows[:, :, None], cols[:, None, :]), vals)
    return dense


# ----------------------------------------------------------------------------------------------
# the local square root of the overlap (natural reparametrisation of large molecules)
# ----------------------------------------------------------------------------------------------

def neighbourhood_overlap_fn(auxmol: gto.Mole):
    """``fn(atoms) -> (n, n)`` overlap ⟨ω_μ|ω_ν⟩ of the density-basis functions of the sorted atom
    indices ``atoms`` (PySCF ``int1e_ovlp`` on the sub-list of shells; no naux² array)."""
    shell_atom = auxmol._bas[:, gto.ATOM_OF]

    def block(atoms):
        sub = auxmol.copy(deep=False)
        sub._bas = auxmol._bas[np.isin(shell_atom, np.asarray(atoms))]
        return sub.intor("int1e_ovlp")

    return block


def build_local_overlap_root(auxmol: gto.Mole, *, radius: float | None = None, groups=None,
                             as_jax: bool = True, stats: dict | None = None):
    """Local square root Ŝ ≈ W^{1/2} of the density-basis overlap
    (:mod:`mofdft_jax.density.local_root`): one neighbourhood overlap (PySCF) and one
    eigendecomposition per centre (heavy atom with its hydrogens)."""
    from mofdft_jax.density.local_root import DEFAULT_RADIUS
    from mofdft_jax.density.local_root import build_local_overlap_root as build_root
    from mofdft_jax.qchem.basis import aux_function_atoms

    t0 = time.perf_counter()
    root = build_root(aux_function_atoms(auxmol), auxmol.atom_coords(),
                      neighbourhood_overlap_fn(auxmol),
                      radius=DEFAULT_RADIUS if radius is None else radius, groups=groups,
                      atom_numbers=auxmol.atom_charges(), as_jax=as_jax, stats=stats)
    if stats is not None:
        stats["wall_s"] = time.perf_counter() - t0
    return root

"""The density adapter: from raw coefficients p to the per-atom network input (spec §2).

Order of operations (spec §2, release ``preprocess_fn``):

1. raw p in PySCF's density-basis order (``(naux,)``);
2. local-frame rotation p ← D p, D block diagonal with one real Wigner-D block per atom and shell
   (:mod:`~mofdft_jax.density.frames`, :mod:`~mofdft_jax.density.wigner`, spec §2.1);
3. natural reparametrisation p′ = Mᵀ D p with M = (D W Dᵀ)^{1/2} the SYMMETRIC square root of the
   local-frame overlap (spec §2.2 and §6.5 item 1), so that ∫|Δρ|² = Δp′ᵀΔp′ and every p′
   component still belongs to one atom and one basis function;
4. scatter into the per-atom slot layout ``(natm, 477)``: element blocks H [0,20), C [20,129),
   N [129,245), O [245,361), F [361,477); each atom writes its own block (spec §1.4);
5. AtomRef on p′ (spec §2.4) and, on the other branch, centring and scaling
   p̃ = λ (p′ - p̄) per (element, slot) (spec §2.3).

Because D is orthogonal, M = D W^{1/2} Dᵀ, so the code applies p′ = D (W^{1/2} p) with the
eigendecomposition W = Q diag(s²) Qᵀ of the global overlap: the frame switch and the
reparametrisation switch are independent. Gradients map as ∇_{p′} = M⁻¹ D ∇_p = D W^{-1/2} ∇_p,
and the inverse map is p = W^{-1/2} Dᵀ p′.

The expensive per-geometry part (frames, D, the eigendecomposition of W) lives in
:class:`AdapterGeometry`, built once per molecule on the host by :func:`build_adapter_geometry` and
passed as an argument; everything else is pure JAX, differentiable with respect to p.

Statistics (means, scales, AtomRef) are per (element, slot); since the element blocks of the slot
layout are disjoint, every statistic is a ``(477,)`` vector. Energies are kcal/mol inside the
network and the statistics (spec §2.4); inputs and outputs of the package are Hartree.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mofdft_jax.density.frames import compute_local_frames
from mofdft_jax.density.local_root import LocalOverlapRoot
from mofdft_jax.density.wigner import MAX_L, wigner_d_real
from mofdft_jax.types import Array, Bool, Float, Int
from mofdft_jax.units import HARTREE_TO_KCAL

#: Elements of the learned functional, in slot order (spec §1.4).
ELEMENTS = (1, 6, 7, 8, 9)
#: Density-basis functions per element (even-tempered basis, spec Table S2).
SLOT_COUNTS = {1: 20, 6: 109, 7: 116, 8: 116, 9: 116}
#: First slot of each element block.
SLOT_OFFSETS = {1: 0, 6: 20, 7: 129, 8: 245, 9: 361}
#: Number of per-atom slots T = 20 + 109 + 3·116.
NSLOT = 477
#: Largest shell size 2l+1 for l ≤ 4.
_MAX_SHELL = 2 * MAX_L + 1
#: Rescaling thresholds of spec §2.3.
S_GRAD = 0.05
S_COEFF = 50.0

#: Angular momenta of the shells of each element's density basis, in PySCF order (the even-tempered
#: basis of 6-31G(2df,p), β = 2.5; ``tests/model/test_parity.py`` checks them against PySCF).
SLOT_SHELL_L = {1: "0000001112", 6: "0000000000011111111222222233344",
                7: "00000000000111111112222222333344", 8: "00000000000111111112222222333344",
                9: "00000000000111111112222222333344"}


def _mirror_signs(shell_l: str) -> np.ndarray:
    """±1 per function: the parity of PySCF's real spherical harmonics under y → −y.

    Y_lm with m < 0 ∝ sin(|m|φ) is odd in y, m ≥ 0 even. PySCF orders p functions (x, y, z)
    and every other shell m = −l … l.
    """
    out = []
    for ch in shell_l:
        l = int(ch)
        if l == 1:
            out += [1.0, -1.0, 1.0]
        else:
            out += [-1.0 if m < 0 else 1.0 for m in range(-l, l + 1)]
    return np.asarray(out)


#: ``(477,)`` sign of every slot of p′ under the reflection of the molecule through a plane
#: (module :func:`mirror_slots`).
SLOT_MIRROR_SIGNS = np.concatenate([_mirror_signs(SLOT_SHELL_L[z]) for z in ELEMENTS])
assert SLOT_MIRROR_SIGNS.shape == (NSLOT,)


def mirror_slots(slots: Float[Array, "natm 477"]) -> Float[Array, "natm 477"]:
    """p′ of the mirror image of a molecule and its density, from p′ of the original.

    With the local frames of spec §2.1 (x̂ to the nearest heavy atom, ẑ from the cross product
    with the next one, z-sign fixed by the anchor Σ_b (x_b − x_a)/d⁴), reflecting the molecule
    through any plane σ maps each atom's frame rows [x̂, ŷ, ẑ] to [σx̂, −σŷ, σẑ]: the local
    coordinates of the mirrored density are those of the original with y → −y, so its p′ is
    p′ with the sign of every y-odd function flipped (:data:`SLOT_MIRROR_SIGNS`). The natural
    reparametrisation commutes with the reflection. Exact for atoms with a proper local frame;
    fallback atoms (identity frame) are neither rotation- nor reflection-invariant.
    """
    return slots * jnp.asarray(SLOT_MIRROR_SIGNS, dtype=slots.dtype)


_ELEMENT_INDEX_TABLE = np.full(10, -1, dtype=np.int32)
for _i, _z in enumerate(ELEMENTS):
    _ELEMENT_INDEX_TABLE[_z] = _i
_SLOT_ELEMENT = np.concatenate([np.full(SLOT_COUNTS[z], i) for i, z in enumerate(ELEMENTS)])


class AdapterGeometry(NamedTuple):
    """Per-geometry constants of the adapter (spec §2.1–2.2); a pytree of arrays.

    Attributes:
      aux_atom: ``(naux,)`` atom of each density-basis function (``natm`` for padding functions).
      aux_slot: ``(naux,)`` slot of each function in its atom's element block.
      rot_index: ``(naux, 9)`` indices of the functions of the shell of μ (D row μ), or ``None``
        when local frames are off.
      rot_weight: ``(naux, 9)`` the matching entries of D (zero past 2l+1), or ``None``.
      overlap_vecs: ``(naux, naux)`` eigenvectors Q of the overlap W, or ``None`` when the natural
        reparametrisation is off.
      overlap_sqrt_vals: ``(naux,)`` square roots s of the eigenvalues of W, or ``None``.
      fallback: ``(natm,)`` atoms on the identity-frame fallback (not rotation invariant).
      overlap_root: the local square root Ŝ ≈ W^{1/2} used instead of the eigendecomposition for
        large molecules (:mod:`~mofdft_jax.density.local_root`), or ``None``.
    """

    aux_atom: Int[Array, "naux"]
    aux_slot: Int[Array, "naux"]
    rot_index: Optional[Int[Array, "naux 9"]]
    rot_weight: Optional[Float[Array, "naux 9"]]
    overlap_vecs: Optional[Float[Array, "naux naux"]]
    overlap_sqrt_vals: Optional[Float[Array, "naux"]]
    fallback: Bool[Array, "natm"]
    overlap_root: Optional[LocalOverlapRoot] = None


class AdapterStatistics(NamedTuple):
    """Training-set statistics of the adapter, all per slot (kcal/mol units, spec §1.8, §2.3–2.4).

    Attributes:
      coeff_mean: ``(477,)`` p̄ of p′.
      coeff_std: ``(477,)`` standard deviation of p′.
      grad_mean: ``(477,)`` ḡ, mean of the gradient labels ∂T/∂p′ (kcal/mol per unit p′).
      grad_scale: ``(477,)`` g, max (or mean) |∂T/∂p′ - ḡ|.
      scale: ``(477,)`` λ = min(g/s_grad, s_coeff/std) if g > s_grad else 1.
      element_offsets: ``(5,)`` T̄_Z for H, C, N, O, F (kcal/mol).
      global_offset: ``()`` T̄_global (kcal/mol).
      delta_mean: ``(477,)`` mean of the ProjMINAO target Δp′ = p′* - p′.
      delta_std: ``(477,)`` its standard deviation (1 where unknown).
      element_seen: ``(5,)`` whether the training set contained H, C, N, O, F.
    """

    coeff_mean: Float[Array, "477"]
    coeff_std: Float[Array, "477"]
    grad_mean: Float[Array, "477"]
    grad_scale: Float[Array, "477"]
    scale: Float[Array, "477"]
    element_offsets: Float[Array, "5"]
    global_offset: Float[Array, ""]
    delta_mean: Float[Array, "477"]
    delta_std: Float[Array, "477"]
    element_seen: Bool[Array, "5"]


def identity_statistics() -> AdapterStatistics:
    """Statistics that leave p′ unchanged (p̄ = 0, λ = 1, no AtomRef), all elements marked seen."""
    zeros = jnp.zeros(NSLOT, dtype=jnp.float64)
    ones = jnp.ones(NSLOT, dtype=jnp.float64)
    return AdapterStatistics(coeff_mean=zeros, coeff_std=ones, grad_mean=zeros, grad_scale=zeros,
                             scale=ones, element_offsets=jnp.zeros(len(ELEMENTS), jnp.float64),
                             global_offset=jnp.zeros((), jnp.float64), delta_mean=zeros,
                             delta_std=ones, element_seen=jnp.ones(len(ELEMENTS), dtype=bool))


# ----------------------------------------------------------------------------------------------
# per-geometry setup (host)
# ----------------------------------------------------------------------------------------------

def _shell_starts(aux_atom: np.ndarray, aux_l: np.ndarray) -> np.ndarray:
    """``(naux,)`` index of the first function of the shell holding each function."""
    naux = len(aux_l)
    start = np.empty(naux, dtype=np.int64)
    mu = 0
    while mu < naux:
        l = int(aux_l[mu])
        size = 2 * l + 1
        block = slice(mu, mu + size)
        if (mu + size > naux or np.any(aux_l[block] != l)
                or np.any(aux_atom[block] != aux_atom[mu])):
            raise ValueError(f"density-basis function {mu}: incomplete shell of l={l} "
                             "(aux_l must list 2l+1 contiguous components per shell)")
        start[block] = mu
        mu += size
    return start


def _aux_slots(atom_numbers: np.ndarray, aux_atom: np.ndarray) -> np.ndarray:
    natm = len(atom_numbers)
    aux_slot = np.empty(len(aux_atom), dtype=np.int64)
    for a in range(natm):
        idx = np.nonzero(aux_atom == a)[0]
        z = int(atom_numbers[a])
        if z not in SLOT_COUNTS:
            raise ValueError(f"atom {a}: element Z={z} has no slots in the learned functional "
                             "(H, C, N, O, F only)")
        if len(idx) != SLOT_COUNTS[z] or np.any(np.diff(idx) != 1):
            raise ValueError(f"atom {a} (Z={z}) carries {len(idx)} density-basis functions, the "
                             f"slot layout expects {SLOT_COUNTS[z]} contiguous ones (even-tempered "
                             "basis of spec §1.4)")
        aux_slot[idx] = SLOT_OFFSETS[z] + np.arange(len(idx))
    return aux_slot


def build_adapter_geometry(bundle, use_local_frames: bool = True,
                           use_reparam: bool = True,
                           overlap_root: LocalOverlapRoot | None = None) -> AdapterGeometry:
    """Build the per-geometry adapter constants (frames, Wigner-D, overlap eigendecomposition).

    Args:
      bundle: an :class:`~mofdft_jax.bundle.IntegralBundle`, or any object (or mapping) with
        ``atom_numbers`` ``(natm,)``, ``coords`` ``(natm, 3)`` (Bohr), ``aux_atom`` ``(naux,)``,
        ``aux_l`` ``(naux,)`` and, when ``use_reparam``, ``overlap`` ``(naux, naux)``
        (W = ⟨ω_μ|ω_ν⟩).
      use_local_frames: rotate each shell into its atom's local frame (spec §2.1).
      use_reparam: natural reparametrisation with the symmetric square root of W (spec §2.2).
      overlap_root: a pre-built local square root of W (large molecules,
        :func:`mofdft_jax.qchem.coulomb_blocks.build_local_overlap_root`); used instead of the
        eigendecomposition of ``bundle.overlap``, consistently in every map (its inverse is the
        exact inverse of Ŝ).

    Returns:
      :class:`AdapterGeometry` (float64 JAX arrays).

    Cost: one ``(naux, naux)`` symmetric eigendecomposition when ``use_reparam``.
    """
    if isinstance(bundle, Mapping):
        bundle = SimpleNamespace(**bundle)
    atom_numbers = np.asarray(bundle.atom_numbers).astype(np.int64)
    coords = np.asarray(bundle.coords, dtype=np.float64)
    aux_atom = np.asarray(bundle.aux_atom).astype(np.int64)
    aux_l = np.asarray(bundle.aux_l).astype(np.int64)
    naux = len(aux_atom)
    if np.any(aux_l > MAX_L):
        raise ValueError(f"density basis has l={aux_l.max()} > {MAX_L}")
    aux_slot = _aux_slots(atom_numbers, aux_atom)
    frames = compute_local_frames(atom_numbers, coords)

    rot_index = rot_weight = None
    if use_local_frames:
        start = _shell_starts(aux_atom, aux_l)
        rot_index = np.repeat(np.arange(naux)[:, None], _MAX_SHELL, axis=1)
        rot_weight = np.zeros((naux, _MAX_SHELL))
        for l in range(MAX_L + 1):
            size = 2 * l + 1
            firsts = np.nonzero((aux_l == l) & (start == np.arange(naux)))[0]
            if len(firsts) == 0:
                continue
            d = wigner_d_real(l, frames.rotations[aux_atom[firsts]])  # (nshell, size, size)
            rows = firsts[:, None] + np.arange(size)[None, :]  # (nshell, size)
            rot_index[rows, :size] = rows[:, None, :]
            rot_weight[rows, :size] = d
        fallback = frames.fallback
    else:
        fallback = np.ones(len(atom_numbers), dtype=bool)

    vecs = sqrt_vals = None
    if use_reparam and overlap_root is not None:
        return _geometry_to_jax(aux_atom, aux_slot, rot_index, rot_weight, None, None, fallback,
                                overlap_root)
    if use_reparam:
        if getattr(bundle, "overlap", None) is None:
            raise ValueError("natural reparametrisation needs the density-basis overlap "
                             "(build the bundle with with_overlap=True)")
        overlap = np.asarray(bundle.overlap, dtype=np.float64)
        vals, vecs = np.linalg.eigh(0.5 * (overlap + overlap.T))
        if vals[0] <= 0:
            raise ValueError(f"density-basis overlap is not positive definite "
                             f"(smallest eigenvalue {vals[0]:.3e})")
        sqrt_vals = np.sqrt(vals)

    return _geometry_to_jax(aux_atom, aux_slot, rot_index, rot_weight, vecs, sqrt_vals, fallback)


def pad_adapter_geometry(geometry: AdapterGeometry, natm: int, naux: int) -> AdapterGeometry:
    """Pad a geometry to ``natm`` atoms and ``naux`` functions (host; for batching molecules).

    Padding functions map to the out-of-range atom ``natm`` (dropped by the slot scatter), rotate by
    the identity and have unit overlap eigenvalues; padding coefficients must be zero.
    """
    if geometry.overlap_root is not None:
        raise ValueError("geometries with a local overlap root (large molecules) are not padded")
    natm0 = geometry.fallback.shape[0]
    naux0 = geometry.aux_atom.shape[0]
    if natm < natm0 or naux < naux0:
        raise ValueError(f"cannot pad a geometry of {natm0} atoms / {naux0} functions to "
                         f"{natm} / {naux}")
    extra = naux - naux0
    aux_atom = np.asarray(geometry.aux_atom)
    aux_atom = np.concatenate([np.where(aux_atom >= natm0, natm, aux_atom),
                               np.full(extra, natm)])
    aux_slot = np.concatenate([np.asarray(geometry.aux_slot), np.zeros(extra, dtype=np.int64)])
    rot_index = rot_weight = vecs = sqrt_vals = None
    if geometry.rot_index is not None:
        pad_idx = np.repeat(np.arange(naux0, naux)[:, None], _MAX_SHELL, axis=1)
        rot_index = np.concatenate([np.asarray(geometry.rot_index), pad_idx])
        pad_w = np.zeros((extra, _MAX_SHELL))
        pad_w[:, 0] = 1.0
        rot_weight = np.concatenate([np.asarray(geometry.rot_weight), pad_w])
    if geometry.overlap_vecs is not None:
        vecs = np.eye(naux)
        vecs[:naux0, :naux0] = np.asarray(geometry.overlap_vecs)
        sqrt_vals = np.concatenate([np.asarray(geometry.overlap_sqrt_vals), np.ones(extra)])
    fallback = np.concatenate([np.asarray(geometry.fallback), np.ones(natm - natm0, dtype=bool)])
    return _geometry_to_jax(aux_atom, aux_slot, rot_index, rot_weight, vecs, sqrt_vals, fallback)


def _geometry_to_jax(aux_atom, aux_slot, rot_index, rot_weight, vecs, sqrt_vals,
                     fallback, overlap_root=None) -> AdapterGeometry:
    as_int = lambda x: None if x is None else jnp.asarray(x, dtype=jnp.int32)  # noqa: E731
    as_float = lambda x: None if x is None else jnp.asarray(x, dtype=jnp.float64)  # noqa: E731
    return AdapterGeometry(aux_atom=as_int(aux_atom), aux_slot=as_int(aux_slot),
                           rot_index=as_int(rot_index), rot_weight=as_float(rot_weight),
                           overlap_vecs=as_float(vecs), overlap_sqrt_vals=as_float(sqrt_vals),
                           fallback=jnp.asarray(np.asarray(fallback, dtype=bool)),
                           overlap_root=overlap_root)


# ----------------------------------------------------------------------------------------------
# coefficient maps (pure JAX)
# ----------------------------------------------------------------------------------------------

def rotate_coeffs(coeffs: Float[Array, "naux"], geometry: AdapterGeometry) -> Float[Array, "naux"]:
    """D p: every shell rotated into its atom's local frame (identity when frames are off)."""
    if geometry.rot_index is None:
        return coeffs
    return (coeffs[geometry.rot_index] * geometry.rot_weight).sum(-1)


def unrotate_coeffs(coeffs: Float[Array, "naux"],
                    geometry: AdapterGeometry) -> Float[Array, "naux"]:
    """Dᵀ p′ (the inverse of :func:`rotate_coeffs`, D orthogonal)."""
    if geometry.rot_index is None:
        return coeffs
    return jnp.zeros_like(coeffs).at[geometry.rot_index].add(geometry.rot_weight * coeffs[:, None])


def _overlap_power(x, geometry: AdapterGeometry, power: float):
    if geometry.overlap_root is not None:
        return geometry.overlap_root.apply(x, power)
    if geometry.overlap_vecs is None:
        return x
    q = geometry.overlap_vecs
    return q @ (geometry.overlap_sqrt_vals ** (2 * power) * (q.T @ x))


def transform_coeffs(coeffs: Float[Array, "naux"],
                     geometry: AdapterGeometry) -> Float[Array, "naux"]:
    """p′ = Mᵀ D p = D W^{1/2} p (spec §2.1–2.2), in PySCF function order."""
    return rotate_coeffs(_overlap_power(coeffs, geometry, 0.5), geometry)


def transform_gradient(grad: Float[Array, "naux"],
                       geometry: AdapterGeometry) -> Float[Array, "naux"]:
    """∇_{p′} = M⁻¹ D ∇_p = D W^{-1/2} ∇_p: a gradient with respect to p expressed for p′."""
    return rotate_coeffs(_overlap_power(grad, geometry, -0.5), geometry)


def untransform_coeffs(coeffs_prime: Float[Array, "naux"],
                       geometry: AdapterGeometry) -> Float[Array, "naux"]:
    """p = Dᵀ M⁻ᵀ p′ = W^{-1/2} Dᵀ p′, the inverse of :func:`transform_coeffs`."""
    return _overlap_power(unrotate_coeffs(coeffs_prime, geometry), geometry, -0.5)


def scatter_to_slots(values: Float[Array, "naux"],
                     geometry: AdapterGeometry) -> Float[Array, "natm 477"]:
    """Per-atom slot layout ``(natm, 477)``: each atom's functions go to its element block."""
    natm = geometry.fallback.shape[0]
    out = jnp.zeros((natm, NSLOT), dtype=values.dtype)
    return out.at[geometry.aux_atom, geometry.aux_slot].set(values, mode="drop")


def gather_from_slots(slots: Float[Array, "natm 477"],
                      geometry: AdapterGeometry) -> Float[Array, "naux"]:
    """Inverse of :func:`scatter_to_slots` (padding functions read 0)."""
    return slots.at[geometry.aux_atom, geometry.aux_slot].get(mode="fill", fill_value=0.0)


def coeffs_to_slots(coeffs: Float[Array, "naux"],
                    geometry: AdapterGeometry) -> Float[Array, "natm 477"]:
    """Raw p → p′ in the per-atom slot layout (spec §2 steps 1–4)."""
    return scatter_to_slots(transform_coeffs(coeffs, geometry), geometry)


def gradient_to_slots(grad: Float[Array, "naux"],
                      geometry: AdapterGeometry) -> Float[Array, "natm 477"]:
    """A gradient ∇_p (e.g. a label) → ∇_{p′} in the slot layout; also maps the normalisation
    vector w to w′ (N = wᵀp = w′ᵀp′), needed to project gradients in the p′ space."""
    return scatter_to_slots(transform_gradient(grad, geometry), geometry)


def slots_to_coeffs(slots: Float[Array, "natm 477"],
                    geometry: AdapterGeometry) -> Float[Array, "naux"]:
    """p′ in the slot layout → raw p (Dᵀ M⁻ᵀ, spec §3.1 item 6)."""
    return untransform_coeffs(gather_from_slots(slots, geometry), geometry)


# ----------------------------------------------------------------------------------------------
# per-element statistics (pure JAX)
# ----------------------------------------------------------------------------------------------

def element_index(atom_numbers: Int[Array, "natm"]) -> Int[Array, "natm"]:
    """Index of each atom's element in :data:`ELEMENTS` (H 0 … F 4); -1 for padding or unknown."""
    z = jnp.clip(atom_numbers, 0, len(_ELEMENT_INDEX_TABLE) - 1)
    idx = jnp.asarray(_ELEMENT_INDEX_TABLE)[z]
    return jnp.where(atom_numbers == z, idx, -1)


def slot_mask(atom_numbers: Int[Array, "natm"]) -> Bool[Array, "natm 477"]:
    """``(natm, 477)`` True on the slots of each atom's element block (all False for padding)."""
    return element_index(atom_numbers)[:, None] == jnp.asarray(_SLOT_ELEMENT)[None, :]


def standardise_coeffs(slots: Float[Array, "natm 477"], atom_numbers: Int[Array, "natm"],
                       stats: AdapterStatistics) -> Float[Array, "natm 477"]:
    """p̃ = λ (p′ - p̄) on each atom's own slots, 0 elsewhere (spec §2.3)."""
    mask = slot_mask(atom_numbers)
    return jnp.where(mask, (slots - stats.coeff_mean) * stats.scale, 0.0)


def atomref_energy(slots: Float[Array, "natm 477"], atom_numbers: Int[Array, "natm"],
                   stats: AdapterStatistics) -> Float[Array, ""]:
    """T_AtomRef = ḡᵀp′ + Σ_a T̄_{Z(a)} + T̄_global, kcal/mol (spec §2.4, Eq. 8)."""
    mask = slot_mask(atom_numbers)
    elem = element_index(atom_numbers)
    linear = jnp.sum(jnp.where(mask, slots * stats.grad_mean, 0.0))
    offsets = jnp.sum(jnp.where(elem >= 0, stats.element_offsets[jnp.maximum(elem, 0)], 0.0))
    return linear + offsets + stats.global_offset


def standardise_delta(delta_slots, atom_numbers, stats: AdapterStatistics):
    """ProjMINAO target Δp′ → (Δp′ - mean)/std on each atom's slots (spec §3.1 item 6)."""
    mask = slot_mask(atom_numbers)
    return jnp.where(mask, (delta_slots - stats.delta_mean) / stats.delta_std, 0.0)


def unstandardise_delta(delta_std_slots, atom_numbers, stats: AdapterStatistics):
    """Inverse of :func:`standardise_delta`: network Δp head output → Δp′ (0 off-block)."""
    mask = slot_mask(atom_numbers)
    return jnp.where(mask, delta_std_slots * stats.delta_std + stats.delta_mean, 0.0)


# ----------------------------------------------------------------------------------------------
# statistics from a training set (host accumulation, device transforms)
# ----------------------------------------------------------------------------------------------

class LabelledGeometry(NamedTuple):
    """Labelled SCF steps of one molecular geometry, the input of :func:`compute_statistics`.

    Attributes:
      atom_numbers: ``(natm,)`` atomic numbers.
      geometry: its :class:`AdapterGeometry`.
      coeffs: ``(nstep, naux)`` raw density coefficients p⁽ᵏ⁾.
      grads: ``(nstep, naux)`` gradient labels ∂T/∂p at p⁽ᵏ⁾, Hartree per unit coefficient.
      energies: ``(nstep,)`` energy labels T⁽ᵏ⁾, Hartree.
      ground_coeffs: ``(naux,)`` the ground-state p* (ProjMINAO targets p* - p⁽ᵏ⁾), or ``None``.
    """

    atom_numbers: np.ndarray
    geometry: AdapterGeometry
    coeffs: np.ndarray
    grads: np.ndarray
    energies: np.ndarray
    ground_coeffs: Optional[np.ndarray] = None


def _slot_mask_np(atom_numbers) -> np.ndarray:
    z = np.asarray(atom_numbers)
    idx = np.where((z >= 0) & (z < len(_ELEMENT_INDEX_TABLE)),
                   _ELEMENT_INDEX_TABLE[np.clip(z, 0, len(_ELEMENT_INDEX_TABLE) - 1)], -1)
    return idx[:, None] == _SLOT_ELEMENT[None, :]


def labels_to_slots(coeffs: Float[Array, "nstep naux"], grads: Float[Array, "nstep naux"],
                    ground_coeffs: Float[Array, "naux"], geometry: AdapterGeometry):
    """Labelled SCF steps of one geometry in the slot layout (for statistics and training).

    Args:
      coeffs: ``(nstep, naux)`` raw p⁽ᵏ⁾.
      grads: ``(nstep, naux)`` gradient labels ∂T/∂p, Hartree per unit coefficient.
      ground_coeffs: ``(naux,)`` the ground-state p*.

    Returns:
      ``(p′, ∂T/∂p′ in kcal/mol, p′* - p′)``, each ``(nstep, natm, 477)``. The normalisation
      vector maps like a gradient: w′ = :func:`gradient_to_slots` (w), since N = wᵀp = w′ᵀp′.
    """
    to_slots = jax.vmap(coeffs_to_slots, in_axes=(0, None))
    p = to_slots(coeffs, geometry)
    g = jax.vmap(gradient_to_slots, in_axes=(0, None))(grads, geometry) * HARTREE_TO_KCAL
    return p, g, coeffs_to_slots(ground_coeffs, geometry)[None] - p


def _transformed(sample: LabelledGeometry, transform):
    ground = sample.ground_coeffs
    p, g, delta = transform(jnp.asarray(sample.coeffs), jnp.asarray(sample.grads),
                            jnp.asarray(sample.coeffs[0] if ground is None else ground),
                            sample.geometry)
    delta = None if ground is None else np.asarray(delta)
    return np.asarray(p), np.asarray(g), delta, _slot_mask_np(sample.atom_numbers)


def compute_statistics(samples: Sequence[LabelledGeometry], *, s_grad: float = S_GRAD,
                       s_coeff: float = S_COEFF, grad_scale_kind: str = "max",
                       use_grad_mean: bool = True) -> AdapterStatistics:
    """Per-(element, slot) statistics of a training set (spec §1.8, §2.3, §2.4).

    * p̄, std: mean and (population) standard deviation of p′ over all atoms of the element, all
      steps, all geometries;
    * ḡ: mean of ∂T/∂p′ (kcal/mol), 0 when ``use_grad_mean`` is False (the chignolin "nograd"
      variant, spec §2.4);
    * g: ``max`` (SI B.3.1, [S25]) or ``mean`` (Eq. 5) of |∂T/∂p′ - ḡ|;
    * λ = min(g/s_grad, s_coeff/std) if g > s_grad else 1;
    * T̄_Z, T̄_global: least squares of mean_k(T⁽ᵈᵏ⁾ - ḡᵀp′⁽ᵈᵏ⁾) = Σ_Z A_Z⁽ᵈ⁾ T̄_Z + T̄_global; when
      every geometry has the same composition only T̄_global is fitted (spec §2.4), otherwise the
      minimum-norm least-squares solution;
    * Δ mean and std of the ProjMINAO target p′* - p′⁽ᵏ⁾ (mean 0, std 1 where no p* is given).

    Two passes over ``samples`` (a re-iterable sequence). Slots of elements absent from the training
    set get p̄ = 0, std = 1, λ = 1, ḡ = 0, and ``element_seen`` False.
    """
    if grad_scale_kind not in ("max", "mean"):
        raise ValueError(f"grad_scale_kind must be 'max' or 'mean', got {grad_scale_kind!r}")
    if len(samples) == 0:
        raise ValueError("compute_statistics needs at least one labelled geometry")
    count = np.zeros(NSLOT)
    sum_p = np.zeros(NSLOT)
    sum_g = np.zeros(NSLOT)
    count_d = np.zeros(NSLOT)
    sum_d = np.zeros(NSLOT)
    seen = np.zeros(len(ELEMENTS), dtype=bool)
    rows = []  # per geometry: composition, mean energy, mean Σ_a p′
    transform = jax.jit(labels_to_slots)  # driver-level jit; geometry passed as an argument
    for sample in samples:
        p, g, delta, mask = _transformed(sample, transform)
        nstep = p.shape[0]
        count += nstep * mask.sum(0)
        sum_p += p.sum((0, 1))
        sum_g += g.sum((0, 1))
        if delta is not None:
            count_d += nstep * mask.sum(0)
            sum_d += delta.sum((0, 1))
        z = np.asarray(sample.atom_numbers)
        elem = _ELEMENT_INDEX_TABLE[z[z > 0]]
        comp = np.bincount(elem, minlength=len(ELEMENTS))
        seen |= comp > 0
        energy_kcal = np.asarray(sample.energies, dtype=np.float64) * HARTREE_TO_KCAL
        rows.append((comp, energy_kcal.mean(), p.sum(1).mean(0)))
    safe = np.maximum(count, 1)
    coeff_mean = np.where(count > 0, sum_p / safe, 0.0)
    grad_mean = np.where(count > 0, sum_g / safe, 0.0) if use_grad_mean else np.zeros(NSLOT)
    delta_mean = np.where(count_d > 0, sum_d / np.maximum(count_d, 1), 0.0)

    var_p = np.zeros(NSLOT)
    var_d = np.zeros(NSLOT)
    gscale = np.zeros(NSLOT)
    for sample in samples:
        p, g, delta, mask = _transformed(sample, transform)
        m = mask[None]
        var_p += np.where(m, (p - coeff_mean) ** 2, 0.0).sum((0, 1))
        dev = np.where(m, np.abs(g - grad_mean), 0.0)
        if grad_scale_kind == "max":
            gscale = np.maximum(gscale, dev.max((0, 1)))
        else:
            gscale += dev.sum((0, 1))
        if delta is not None:
            var_d += np.where(m, (delta - delta_mean) ** 2, 0.0).sum((0, 1))
    if grad_scale_kind == "mean":
        gscale = gscale / safe
    coeff_std = np.where(count > 0, np.sqrt(var_p / safe), 1.0)
    delta_std = np.sqrt(var_d / np.maximum(count_d, 1))
    delta_std = np.where((count_d > 0) & (delta_std > 0), delta_std, 1.0)

    with np.errstate(divide="ignore"):
        coeff_limit = np.where(coeff_std > 0, s_coeff / coeff_std, np.inf)
    scale = np.where(gscale > s_grad, np.minimum(gscale / s_grad, coeff_limit), 1.0)

    comps = np.array([r[0] for r in rows], dtype=np.float64)
    target = np.array([r[1] - r[2] @ grad_mean for r in rows])
    offsets = np.zeros(len(ELEMENTS))
    if np.all(comps == comps[0]):
        global_offset = target.mean()
    else:
        cols = np.nonzero(seen)[0]
        design = np.concatenate([comps[:, cols], np.ones((len(rows), 1))], axis=1)
        sol = np.linalg.lstsq(design, target, rcond=None)[0]
        offsets[cols] = sol[:-1]
        global_offset = sol[-1]
    f64 = lambda x: jnp.asarray(x, dtype=jnp.float64)  # noqa: E731
    return AdapterStatistics(coeff_mean=f64(coeff_mean), coeff_std=f64(coeff_std),
                             grad_mean=f64(grad_mean), grad_scale=f64(gscale), scale=f64(scale),
                             element_offsets=f64(offsets), global_offset=f64(global_offset),
                             delta_mean=f64(delta_mean), delta_std=f64(delta_std),
                             element_seen=jnp.asarray(seen))

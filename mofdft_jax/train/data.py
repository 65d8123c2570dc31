"""Training data in the transformed space, padded batches (spec §2, §3.3).

The host side (:mod:`mofdft_jax.data.training_set`) reads the shards, builds each molecule's
:class:`~mofdft_jax.density.adapter.AdapterGeometry` once (frames, Wigner-D, overlap square root)
and calls :func:`transform_molecule_labels` here, which maps the raw labels of all SCF steps of the
molecule into the adapter's p′ space:

.. math::  p′ = D W^{1/2} p,\\quad ∇_{p′}T = D W^{-1/2} ∇_p T,\\quad w′ = D W^{-1/2} w,
           \\quad Δ′ = p′^* − p′

(gradient labels converted to kcal/mol). Curvature labels (:mod:`mofdft_jax.qchem.response`), a
direction δp and the Hessian-vector product r = ∇²T δp, map as a coefficient change and as a
gradient: δp′ = D W^{1/2} δp, r′ = D W^{-1/2} r (then ∇²_{p′}T δp′ = r′), r′ in kcal/mol. Since
the learned energy depends on p only through p′, the training step then needs no per-geometry matrix at all: a batch is a stack of ``(naux,)``
vectors plus the atom/slot index of every function, padded to ``(natm_max, naux_max)``
(:class:`~mofdft_jax.train.losses.StepInputs`).

:class:`TrainingSet` holds a split as NumPy arrays (host memory): per-molecule arrays of shape
``(M, …)`` and per-step arrays of shape ``(S, naux_max)`` with ``step_molecule`` mapping steps to
molecules. :func:`gather_batch` assembles a batch of any step indices, padded to a fixed batch size
with zero-weight rows, so one compiled ``train_step`` serves every batch.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mofdft_jax.density.adapter import AdapterGeometry, transform_coeffs, transform_gradient
from mofdft_jax.train.losses import StepInputs
from mofdft_jax.units import HARTREE_TO_KCAL


class MoleculeData(NamedTuple):
    """The labelled steps of one molecule in p′ space (NumPy; no padding).

    Attributes:
      name: molecule (shard) name.
      atom_numbers: ``(natm,)``; coords: ``(natm, 3)`` Bohr.
      aux_atom, aux_slot: ``(naux,)`` atom and slot of every density-basis function.
      norm: ``(naux,)`` w′.
      coeffs, grad, delta: ``(K, naux)`` p′, ∂T/∂p′ (kcal/mol), p′* − p′.
      energy: ``(K,)`` labels in kcal/mol.
      response_dp, response_hvp: ``(K, M, naux)`` curvature labels δp′ and ∇²T δp′ (kcal/mol), or
        ``None`` when the data have none.
      label_weight: ``(K,)`` 1 for a labelled step, 0 for a visited density (its energy and
        gradient are 0 placeholders); ``None``: all labelled.
      bounds: ``(K, 3)`` visited-density bound constants (kcal/mol; NaN where none applies, on
        every labelled step); ``None``: no visited rows.
    """

    name: str
    atom_numbers: np.ndarray
    coords: np.ndarray
    aux_atom: np.ndarray
    aux_slot: np.ndarray
    norm: np.ndarray
    coeffs: np.ndarray
    grad: np.ndarray
    delta: np.ndarray
    energy: np.ndarray
    response_dp: np.ndarray | None = None
    response_hvp: np.ndarray | None = None
    label_weight: np.ndarray | None = None
    bounds: np.ndarray | None = None


#: The steps of a molecule are padded to a multiple of this before the (jitted) transform.
_STEP_PAD = 8


@functools.cache
def _transform_fn():
    def run(coeffs, grads, ground, norm, geometry):
        to_p = jax.vmap(transform_coeffs, in_axes=(0, None))
        to_g = jax.vmap(transform_gradient, in_axes=(0, None))
        p = to_p(coeffs, geometry)
        return (p, to_g(grads, geometry) * HARTREE_TO_KCAL,
                transform_coeffs(ground, geometry)[None] - p, transform_gradient(norm, geometry))

    return jax.jit(run)  # driver-level jit: geometry and labels are arguments


@functools.cache
def _transform_response_fn():
    def run(dp, hvp, geometry):
        to_p = jax.vmap(transform_coeffs, in_axes=(0, None))
        to_g = jax.vmap(transform_gradient, in_axes=(0, None))
        return to_p(dp, geometry), to_g(hvp, geometry) * HARTREE_TO_KCAL

    return jax.jit(run)


def _transform_response(dp, hvp, geometry, naux: int):
    """``(K, M, naux)`` δp′ and r′ of raw curvature labels (``(None, None)`` without labels)."""
    if dp is None or hvp is None:
        return None, None
    k, m = np.shape(dp)[:2]
    flat = k * m
    dp_t, hvp_t = jax.device_get(_transform_response_fn()(
        _padded_rows(np.reshape(dp, (flat, naux))), _padded_rows(np.reshape(hvp, (flat, naux))),
        geometry))
    return dp_t[:flat].reshape(k, m, naux), hvp_t[:flat].reshape(k, m, naux)


def _padded_rows(x) -> jax.Array:
    """``(n, naux)`` rows as float64, zero-padded to a multiple of ``_STEP_PAD`` rows (few
    distinct shapes: few compilations of the jitted transforms)."""
    x = np.asarray(x, dtype=np.float64)
    padded = -(-x.shape[0] // _STEP_PAD) * _STEP_PAD
    return jnp.asarray(np.pad(x, ((0, padded - x.shape[0]), (0, 0))))


def transform_molecule_labels(name: str, atom_numbers, coords, geometry: AdapterGeometry,
                              coeffs, grads, energies, ground_coeffs, norm, *,
                              response_dp=None, response_hvp=None, visited_coeffs=None,
                              visited_bounds=None) -> MoleculeData:
    """Map the raw labels of one molecule into p′ space (see module docstring).

    Visited densities (``visited_coeffs`` ``(V, naux)`` raw p_v with ``visited_bounds`` ``(V, 3)``
    kcal/mol, :mod:`mofdft_jax.data.visited`) are appended as rows with label weight 0, zero
    energy/gradient placeholders, zero curvature labels and Δ′ = p′* − p′_v (the ProjMINAO head
    is thus also trained at the densities the solver starts from and passes through).

    Args:
      atom_numbers: ``(natm,)``; coords: ``(natm, 3)`` Bohr.
      geometry: the molecule's adapter geometry (built with the functional's switches).
      coeffs: ``(K, naux)`` raw p⁽ᵏ⁾; grads: ``(K, naux)`` ∂T/∂p in Ha; energies: ``(K,)`` Ha.
      ground_coeffs: ``(naux,)`` p*; norm: ``(naux,)`` w.
      response_dp, response_hvp: optional ``(K, M, naux)`` curvature labels (δp, ∇²T δp in Ha).
    """
    coeffs = np.asarray(coeffs, dtype=np.float64)
    grads = np.asarray(grads, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64)
    n_label = coeffs.shape[0]
    label_weight = bounds = None
    if visited_coeffs is not None and len(visited_coeffs):
        visited = np.asarray(visited_coeffs, dtype=np.float64)
        n_visit = visited.shape[0]
        coeffs = np.concatenate([coeffs, visited])
        grads = np.concatenate([grads, np.zeros_like(visited)])
        energies = np.concatenate([energies, np.zeros(n_visit)])
        label_weight = np.concatenate([np.ones(n_label), np.zeros(n_visit)])
        bounds = np.concatenate([np.full((n_label, 3), np.nan),
                                 np.asarray(visited_bounds, dtype=np.float64).reshape(n_visit, 3)])
        if response_dp is not None and response_hvp is not None:
            pad = ((0, n_visit), (0, 0), (0, 0))
            response_dp = np.pad(np.asarray(response_dp, dtype=np.float64), pad)
            response_hvp = np.pad(np.asarray(response_hvp, dtype=np.float64), pad)
    nstep = coeffs.shape[0]
    f64 = lambda x: jnp.asarray(np.asarray(x, dtype=np.float64))  # noqa: E731
    p, g, d, w = jax.device_get(_transform_fn()(_padded_rows(coeffs), _padded_rows(grads),
                                                f64(ground_coeffs), f64(norm), geometry))
    p, g, d = p[:nstep], g[:nstep], d[:nstep]
    r_dp, r_hvp = _transform_response(response_dp, response_hvp, geometry, coeffs.shape[1])
    return MoleculeData(name=name, atom_numbers=np.asarray(atom_numbers, dtype=np.int32),
                        coords=np.asarray(coords, dtype=np.float64),
                        aux_atom=np.asarray(geometry.aux_atom, dtype=np.int32),
                        aux_slot=np.asarray(geometry.aux_slot, dtype=np.int32),
                        norm=np.asarray(w), coeffs=np.asarray(p), grad=np.asarray(g),
                        delta=np.asarray(d),
                        energy=energies * HARTREE_TO_KCAL,
                        response_dp=r_dp, response_hvp=r_hvp, label_weight=label_weight,
                        bounds=bounds)


class TrainingSet(NamedTuple):
    """One split, padded (NumPy arrays on the host).

    Attributes:
      names: molecule names, ``M``.
      atom_numbers: ``(M, natm_max)`` (0 = padding); coords: ``(M, natm_max, 3)``.
      aux_atom: ``(M, naux_max)`` (``natm_max`` for padding functions); aux_slot: ``(M, naux_max)``.
      norm: ``(M, naux_max)`` w′ (0 on padding).
      step_molecule: ``(S,)`` molecule of each step.
      coeffs, grad, delta: ``(S, naux_max)`` (0 on padding); energy: ``(S,)`` kcal/mol.
      response_dp, response_hvp: ``(S, M, naux_max)`` curvature labels (M = 0: none; M is the
        smallest count over the molecules).
      label_weight: ``(S,)`` 1 labelled step, 0 visited density; bounds: ``(S, 3)`` their bound
        constants (NaN: none).
    """

    names: tuple
    atom_numbers: np.ndarray
    coords: np.ndarray
    aux_atom: np.ndarray
    aux_slot: np.ndarray
    norm: np.ndarray
    step_molecule: np.ndarray
    coeffs: np.ndarray
    grad: np.ndarray
    delta: np.ndarray
    energy: np.ndarray
    response_dp: np.ndarray | None = None
    response_hvp: np.ndarray | None = None
    label_weight: np.ndarray | None = None
    bounds: np.ndarray | None = None

    @property
    def n_steps(self) -> int:
        return int(self.energy.shape[0])

    @property
    def n_molecules(self) -> int:
        return len(self.names)

    @property
    def shape(self) -> tuple[int, int]:
        """``(natm_max, naux_max)``."""
        return int(self.atom_numbers.shape[1]), int(self.aux_atom.shape[1])


def make_training_set(molecules: Sequence[MoleculeData], natm_max: int | None = None,
                      naux_max: int | None = None) -> TrainingSet:
    """Pad and stack molecules into a :class:`TrainingSet`.

    ``natm_max``/``naux_max`` default to the largest molecule; pass common values to give the
    training and validation sets the same shapes (one compilation).
    """
    if not molecules:
        raise ValueError("make_training_set needs at least one molecule")
    natm_max = max(len(m.atom_numbers) for m in molecules) if natm_max is None else natm_max
    naux_max = max(len(m.aux_atom) for m in molecules) if naux_max is None else naux_max
    nmol = len(molecules)
    nstep = sum(m.energy.shape[0] for m in molecules)
    atom_numbers = np.zeros((nmol, natm_max), dtype=np.int32)
    coords = np.zeros((nmol, natm_max, 3))
    aux_atom = np.full((nmol, naux_max), natm_max, dtype=np.int32)
    aux_slot = np.zeros((nmol, naux_max), dtype=np.int32)
    norm = np.zeros((nmol, naux_max))
    step_molecule = np.zeros(nstep, dtype=np.int32)
    coeffs = np.zeros((nstep, naux_max))
    grad = np.zeros((nstep, naux_max))
    delta = np.zeros((nstep, naux_max))
    energy = np.zeros(nstep)
    n_resp = min(0 if m.response_dp is None else m.response_dp.shape[1] for m in molecules)
    response_dp = np.zeros((nstep, n_resp, naux_max))
    response_hvp = np.zeros((nstep, n_resp, naux_max))
    label_weight = np.ones(nstep)
    bounds = np.full((nstep, 3), np.nan)
    s = 0
    for i, m in enumerate(molecules):
        natm, naux, k = len(m.atom_numbers), len(m.aux_atom), m.energy.shape[0]
        if natm > natm_max or naux > naux_max:
            raise ValueError(f"molecule {m.name}: {natm} atoms / {naux} functions exceed the "
                             f"padding {natm_max} / {naux_max}")
        atom_numbers[i, :natm] = m.atom_numbers
        coords[i, :natm] = m.coords
        aux_atom[i, :naux] = np.where(m.aux_atom >= natm, natm_max, m.aux_atom)
        aux_slot[i, :naux] = m.aux_slot
        norm[i, :naux] = m.norm
        step_molecule[s:s + k] = i
        coeffs[s:s + k, :naux] = m.coeffs
        grad[s:s + k, :naux] = m.grad
        delta[s:s + k, :naux] = m.delta
        energy[s:s + k] = m.energy
        if n_resp:
            response_dp[s:s + k, :, :naux] = m.response_dp[:, :n_resp]
            response_hvp[s:s + k, :, :naux] = m.response_hvp[:, :n_resp]
        if m.label_weight is not None:
            label_weight[s:s + k] = m.label_weight
        if m.bounds is not None:
            bounds[s:s + k] = m.bounds
        s += k
    return TrainingSet(names=tuple(m.name for m in molecules), atom_numbers=atom_numbers,
                       coords=coords, aux_atom=aux_atom, aux_slot=aux_slot, norm=norm,
                       step_molecule=step_molecule, coeffs=coeffs, grad=grad, delta=delta,
                       energy=energy, response_dp=response_dp, response_hvp=response_hvp,
                       label_weight=label_weight, bounds=bounds)


def gather_batch(data: TrainingSet, indices: np.ndarray, batch_size: int) -> StepInputs:
    """The steps ``indices`` as a :class:`StepInputs` batch of exactly ``batch_size`` rows.

    Rows past ``len(indices)`` repeat step 0 with weight 0 (they do not enter the loss).
    """
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    if n > batch_size:
        raise ValueError(f"{n} steps do not fit a batch of {batch_size}")
    idx = np.concatenate([indices, np.zeros(batch_size - n, dtype=np.int64)])
    mol = data.step_molecule[idx]
    weight = np.zeros(batch_size)
    weight[:n] = 1.0
    return StepInputs(atom_numbers=data.atom_numbers[mol], coords=data.coords[mol],
                      aux_atom=data.aux_atom[mol], aux_slot=data.aux_slot[mol],
                      coeffs=data.coeffs[idx], grad=data.grad[idx], delta=data.delta[idx],
                      norm=data.norm[mol], energy=data.energy[idx], weight=weight,
                      response_dp=_rows(data.response_dp, idx, data.coeffs.shape[1]),
                      response_hvp=_rows(data.response_hvp, idx, data.coeffs.shape[1]),
                      label_weight=(np.ones(batch_size) if data.label_weight is None
                                    else data.label_weight[idx]),
                      bounds=(np.full((batch_size, 3), np.nan) if data.bounds is None
                              else data.bounds[idx]))


def _rows(x, idx, naux: int) -> np.ndarray:
    """Rows ``idx`` of an ``(S, M, naux)`` array (``None``: ``(len(idx), 0, naux)`` zeros)."""
    return np.zeros((len(idx), 0, naux)) if x is None else x[idx]


def epoch_batches(n_steps: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Shuffled step indices of one epoch, cut into batches (the last one may be short).

    The permutation depends only on ``(seed, epoch)``, so a resumed run replays the same order.
    """
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(n_steps)
    return [perm[i:i + batch_size] for i in range(0, n_steps, batch_size)]

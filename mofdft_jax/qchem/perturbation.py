"""Random one-body potentials added to the Fock matrix during chosen SCF steps (perturbed labels).

Why: the plain SCF path from MINAO to p* is one thin curve through density space; a functional
trained only on it knows the slope along that curve and nothing across it (the learned ethanol
functional has 13 negative Hessian modes at p*). Adding a random potential to the Fock matrix
of chosen SCF steps bends the path sideways, and every such step is still an *exact*
non-interacting ground state, so its labels stay exact (the idea of KineticNet's random external
potentials and of STRUCTURES25's perturbed-Fock data, Remme et al., JACS 2025).

The potential. Coefficients u ∈ ℝ^naux are drawn in the density basis {ω_μ}, u_μ ~ N(0, σ_k²),
i.e. v_pert(r) = Σ_μ u_μ ω_μ(r). Its matrix in the orbital basis is the 3-centre overlap

.. math:: V^{pert}_{αβ} = ∫ η_α(r) η_β(r) v_{pert}(r)\\,dr = Σ_μ u_μ (αβ|μ)_{ovlp}

(PySCF ``int3c1e``), added to the Fock matrix that step k diagonalises (after the DIIS
extrapolation; the un-extrapolated F = h + V[D] that DIIS stores is left unperturbed). A fresh u is
drawn for every perturbed step, with the standard deviation falling linearly over the window of
steps k = k₀ … k₁ (1-based SCF step numbers: step k is produced by PySCF cycle k − 1)

.. math:: σ_k = σ_0 \\frac{k_1 - k}{k_1 - k_0} + σ_1

so the run ends the window with σ₁ and converges unperturbed afterwards (its last step is the
ordinary KS ground state). While the window is open the SCF is not allowed to stop.

The gradient label of a perturbed step. Step k's orbitals are the ground state of the potential
v_eff⁽ᵏ⁾ + v_pert⁽ᵏ⁾, so the Euler equation of the non-interacting problem reads
δT_S/δρ = −(v_eff⁽ᵏ⁾ + v_pert⁽ᵏ⁾) + const. In the density basis the derivative of the linear
functional ∫ v_pert ρ_p with respect to p_ν is Σ_μ u_μ ∫ ω_μ ω_ν = (S u)_ν, S the density-basis
overlap (``int1e_ovlp`` of the auxiliary molecule), hence

.. math:: ∇_p T_S^{(k)} = -\\Big(Σ_j π^{(k)}_j ∇_p E_{eff}(p^{(j)}) + S u^{(k)}\\Big),

the unperturbed label of :mod:`mofdft_jax.qchem.labels` minus S u⁽ᵏ⁾. The value label T_S⁽ᵏ⁾ is
unchanged (it is tr(ΓT) of exact ground-state orbitals, with the fitting correction). Checked in
``tests/qchem/test_perturbed_labels.py``: along a family of SCFs converged under λ·u, the change of
the T_S labels equals the integral of the gradient labels along the fitted densities.

Determinism: the draws of run r of a molecule come from a NumPy generator seeded with
(``seed``, r, a hash of the geometry and elements), so the same recipe gives byte-identical shards
whatever the worker or the order.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class PerturbationSchedule:
    """Which SCF steps are perturbed and how strongly.

    Attributes:
      first_step, last_step: the window k₀ … k₁ of perturbed SCF steps (1-based, inclusive).
      start_std, end_std: σ₀ and σ₁ of σ_k = σ₀ (k₁ − k)/(k₁ − k₀) + σ₁ (Hartree per unit
        coefficient of the normalised density-basis functions).
    """

    first_step: int = 5
    last_step: int = 25
    start_std: float = 0.1
    end_std: float = 0.002

    def __post_init__(self):
        if not 1 <= self.first_step <= self.last_step:
            raise ValueError(f"perturbed steps must satisfy 1 <= first <= last, got "
                             f"{self.first_step}..{self.last_step}")
        if self.start_std < 0 or self.end_std < 0:
            raise ValueError("perturbation standard deviations must be >= 0")

    def std(self, step: int) -> Optional[float]:
        """σ_k of SCF step ``step`` (1-based), or ``None`` outside the window."""
        if not self.first_step <= step <= self.last_step:
            return None
        span = self.last_step - self.first_step
        frac = (self.last_step - step) / span if span else 0.0
        return self.start_std * frac + self.end_std


def geometry_seed_words(numbers, coords_bohr) -> list[int]:
    """4 seed words from the SHA-256 of a geometry (elements, coordinates rounded to 1e-8 Bohr, so
    a geometry read back from a file reproduces them)."""
    digest = hashlib.sha256()
    digest.update(np.asarray(numbers, dtype=np.int64).tobytes())
    digest.update(np.round(np.asarray(coords_bohr, dtype=np.float64), 8).tobytes())
    return [int(w) for w in np.frombuffer(digest.digest()[:16], dtype=np.uint32)]


def perturbation_seed(numbers, coords_bohr, run: int, seed: int = 0) -> list[int]:
    """Seed words for run ``run`` of one molecule: (seed, run, :func:`geometry_seed_words`)."""
    return [int(seed), int(run)] + geometry_seed_words(numbers, coords_bohr)


def overlap_3c(mol, auxmol) -> np.ndarray:
    """``(naux, nao (nao + 1)/2)`` 3-centre overlap (αβ|μ) = ∫ η_α η_β ω_μ (PySCF ``int3c1e``),
    lower triangle α ≥ β packed as ``pyscf.lib.pack_tril`` (naux · nao²/2 · 8 bytes: 130 MB for
    ethanol in the paper's bases)."""
    from pyscf.df import incore

    tensor = incore.aux_e2(mol, auxmol, "int3c1e", aosym="s2ij")  # (npair, naux)
    return np.ascontiguousarray(tensor.T)


class FockPerturbation:
    """The random potentials of one perturbed SCF run (host object used by ``run_ks``).

    ``matrix(step)`` draws u⁽ᵏ⁾ for a step inside the schedule's window (steps must be asked for in
    increasing order, which the SCF loop does), stores it and returns V^pert as ``(nao, nao)``;
    outside the window it returns ``None``. :meth:`constant` makes the other kind: one fixed u, a
    static external potential that ``run_ks`` adds to the core Hamiltonian (so DIIS sees it too and
    the SCF converges to the ground state of E_KS[ρ] + ∫ v_pert ρ; used to check the labels).
    Adding a potential only to the diagonalised Fock, as the random draws do, leaves DIIS
    minimising the commutator of the unperturbed Fock: fine for a potential that changes every
    step and then stops, but a static one then never converges (measured on water: |ΔE| ~1e-5
    after 100 cycles).

    Args:
      mol: orbital-basis molecule; auxmol: density-basis molecule (of the labels).
      schedule: the window and σ schedule.
      seed: seed words (:func:`perturbation_seed`).
      tensor: the :func:`overlap_3c` of ``mol`` and ``auxmol`` when already computed (runs of one
        molecule share it).
    """

    def __init__(self, mol, auxmol, schedule: PerturbationSchedule | None, seed=None, *,
                 fixed: np.ndarray | None = None, tensor: np.ndarray | None = None):
        if (schedule is None) == (fixed is None):
            raise ValueError("give either a schedule (random draws) or fixed coefficients")
        self.schedule = schedule
        self.naux = int(auxmol.nao_nr())
        self._tensor = overlap_3c(mol, auxmol) if tensor is None else tensor
        self._fixed = None if fixed is None else np.asarray(fixed, dtype=np.float64)
        if self._fixed is not None and self._fixed.shape != (self.naux,):
            raise ValueError(f"fixed coefficients must have shape ({self.naux},), "
                             f"got {self._fixed.shape}")
        self._rng = np.random.default_rng(seed)
        self.coeffs: dict[int, np.ndarray] = {}
        self.stds: dict[int, float] = {}

    @classmethod
    def constant(cls, mol, auxmol, coeffs: np.ndarray) -> "FockPerturbation":
        """The same potential Σ_μ u_μ ω_μ at every SCF step (``coeffs`` = u, ``(naux,)``)."""
        return cls(mol, auxmol, None, fixed=coeffs)

    @property
    def is_constant(self) -> bool:
        """A static potential (:meth:`constant`) rather than scheduled random draws."""
        return self._fixed is not None

    def constant_matrix(self) -> np.ndarray:
        """V^pert of a :meth:`constant` perturbation, ``(nao, nao)``."""
        from pyscf import lib

        if self._fixed is None:
            raise ValueError("not a constant perturbation")
        return lib.unpack_tril(self._fixed @ self._tensor)

    def per_step(self, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """``(n_steps + 1, naux)`` u⁽ᵏ⁾ and ``(n_steps + 1,)`` σ_k of steps 0 … n_steps (zeros where
        the step was not perturbed; a constant potential is u at steps 1 … n_steps, σ = 0)."""
        coeffs = np.zeros((n_steps + 1, self.naux))
        stds = np.zeros(n_steps + 1)
        if self._fixed is not None:
            coeffs[1:] = self._fixed
            return coeffs, stds
        for step, u in self.coeffs.items():
            if step <= n_steps:
                coeffs[step] = u
                stds[step] = self.stds[step]
        return coeffs, stds

    def matrix(self, step: int) -> Optional[np.ndarray]:
        """V^pert of SCF step ``step`` (fresh draw), or ``None`` if the step is not perturbed."""
        if self._fixed is not None:
            return None  # a static potential sits in the core Hamiltonian (run_ks)
        std = self.schedule.std(step)
        if std is None:
            return None
        u = self._rng.normal(0.0, std, self.naux)
        self.coeffs[int(step)] = u
        self.stds[int(step)] = float(std)
        from pyscf import lib

        return lib.unpack_tril(u @ self._tensor)

    def window_open(self, step: int) -> bool:
        """Whether a later step than ``step`` is still to be perturbed by the schedule (then the
        SCF may not stop; a constant perturbation never holds the SCF)."""
        return self.schedule is not None and step < self.schedule.last_step


__all__ = ["FockPerturbation", "PerturbationSchedule", "geometry_seed_words", "overlap_3c",
           "perturbation_seed"]

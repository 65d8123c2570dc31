"""Initial densities of the OFDFT solver (spec §4.3), as density-basis coefficients.

=============  =========================================================================  =========
name           how                                                                        cost
=============  =========================================================================  =========
``minao``      PySCF ``init_guess_by_minao`` density matrix → plain Coulomb fit             O(N³)
``huckel``     PySCF ``init_guess_by_huckel`` density matrix → plain Coulomb fit            O(N³)
``fastminao``  per-element isolated-atom MINAO densities, Coulomb-fitted once per element  O(N)
               (cached in memory) and concatenated atom by atom
``ks``         the reference: converged PySCF KS density (the settings' functional, basis,  KS-DFT
               grid) fitted with the settings' label fit (default Coulomb + external row)
=============  =========================================================================  =========

The released code fits the MINAO and Hückel density matrices with the *plain* Coulomb metric
W̃ p = L̃Γ (spec §1.5, §6.5 item 9); so do we. The fits conserve the electron count only to
~10⁻⁴ (9.9993 for water, spec §1.5), and the solver needs wᵀp = N exactly. Every guess is
therefore **renormalised** (:func:`renormalise`):

* when W̃ is at hand (``minao``, ``huckel``, ``ks``) by the smallest correction in the Coulomb
  metric, p + W̃⁻¹w (N − wᵀp)/(wᵀW̃⁻¹w): the minimiser of (p' − p)ᵀW̃(p' − p) subject to
  wᵀp' = N, i.e. the charge-constrained Coulomb fit;
* for the linear-cost ``fastminao`` (W̃ is never factorised) by the Euclidean projection along w,
  p + w (N − wᵀp)/(wᵀw), the same correction the solver applies to any off-plane start.

Measured on water (PBE/6-31G(2df,p), KS density, label fit ``coulomb+ext``, 7·10⁻⁴ electrons
missing): against the KS values, scaling p by N/(wᵀp) moves E_ext by −13.9 mHa and E_H by
+6.5 mHa; the Euclidean projection −4.1 / +3.5 mHa; the Coulomb-metric correction −1.8 / +1.8 mHa,
the smallest, hence the choice.

The ``fastminao`` guess is the M-OFDFT code's "fast MINAO" (spec §4.3): the superposition of
isolated-atom MINAO densities. The molecular MINAO guess of PySCF projects the same atomic
densities into the whole molecular basis, so the two differ only by that projection.

**ProjMINAO** (``projminao``, spec §4.3) is MINAO plus the learned Δp of a
:class:`~mofdft_jax.model.functional.LearnedFunctional`; it takes the options ``functional``,
``bundle`` and ``geometry``. **Extension point.** Guesses are looked up in :data:`INITIAL_GUESSES`
(the CLI's ``--init`` choices come from it); add more with :func:`register_initial_guess`
(``fn(mol, auxmol, **options) -> InitialGuess``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import scipy.linalg
from pyscf import gto
from pyscf.scf import hf

from mofdft_jax.qchem.basis import make_auxmol
from mofdft_jax.qchem.fitting import fit_density
from mofdft_jax.qchem.integrals import compute_aux_norm


@dataclasses.dataclass(frozen=True)
class InitialGuess:
    """Initial coefficients and what produced them.

    Attributes:
      coeffs: ``(naux,)`` density coefficients with wᵀp = N (to rounding).
      name: guess name (a key of :data:`INITIAL_GUESSES`).
      fitted_electrons: wᵀp of the raw fit, before renormalisation.
      wall_s: wall time of the guess.
      reference: for ``ks``, the KS energy components in Ha (``e_tot``, ``kinetic``, ``hartree``,
        ``xc``, ``external``, ``e_nuc``), the SCF convergence flag and the fit kind; else empty.
    """

    coeffs: np.ndarray
    name: str
    fitted_electrons: float
    wall_s: float
    reference: dict = dataclasses.field(default_factory=dict)


def renormalise(coeffs: np.ndarray, norm: np.ndarray, n_electrons: float,
                coulomb: np.ndarray | None = None) -> np.ndarray:
    """Correct p so that wᵀp = N exactly (to rounding).

    With ``coulomb`` (W̃): p + W̃⁻¹w (N − wᵀp)/(wᵀW̃⁻¹w), the nearest point of the plane in the
    Coulomb metric; without: p + w (N − wᵀp)/(wᵀw), the nearest in the Euclidean metric.
    """
    coeffs = np.asarray(coeffs, dtype=np.float64)
    norm = np.asarray(norm, dtype=np.float64)
    missing = float(n_electrons) - float(norm @ coeffs)
    if coulomb is None:
        direction = norm
    else:
        direction = scipy.linalg.cho_solve(scipy.linalg.cho_factor(coulomb), norm)
    return coeffs + direction * (missing / float(norm @ direction))


def _finish(name: str, coeffs: np.ndarray, auxmol: gto.Mole, n_electrons: float, t0: float,
            reference: dict | None = None, coulomb: np.ndarray | None = None) -> InitialGuess:
    norm = compute_aux_norm(auxmol)
    fitted = float(norm @ coeffs)
    return InitialGuess(coeffs=renormalise(coeffs, norm, n_electrons, coulomb), name=name,
                        fitted_electrons=fitted, wall_s=time.perf_counter() - t0,
                        reference=reference or {})


def _coulomb_fit(dm, mol: gto.Mole, auxmol: gto.Mole, kind: str = "coulomb"):
    """(coefficients, W̃) of a density matrix fitted with ``kind``."""
    coulomb = auxmol.intor("int2c2e")
    return fit_density(dm, mol, auxmol, kind=kind, coulomb=coulomb), coulomb


def minao_guess(mol: gto.Mole, auxmol: gto.Mole, **_) -> InitialGuess:
    """PySCF MINAO density matrix, Coulomb-fitted, charge-constrained (spec §4.3)."""
    t0 = time.perf_counter()
    coeffs, coulomb = _coulomb_fit(hf.init_guess_by_minao(mol), mol, auxmol)
    return _finish("minao", coeffs, auxmol, mol.nelectron, t0, coulomb=coulomb)


def huckel_guess(mol: gto.Mole, auxmol: gto.Mole, **_) -> InitialGuess:
    """PySCF extended-Hückel density matrix, Coulomb-fitted, charge-constrained (spec §4.3)."""
    t0 = time.perf_counter()
    coeffs, coulomb = _coulomb_fit(hf.init_guess_by_huckel(mol), mol, auxmol)
    return _finish("huckel", coeffs, auxmol, mol.nelectron, t0, coulomb=coulomb)


_ATOM_CACHE: dict[tuple, np.ndarray] = {}


def atomic_minao_coeffs(symbol: str, orbital_basis, aux_basis) -> np.ndarray:
    """Coulomb-fitted MINAO density coefficients of an isolated atom (cached per element/basis).

    Args:
      symbol: element symbol.
      orbital_basis, aux_basis: the element's orbital and density bases, in PySCF format (e.g.
        ``mol._basis[symbol]`` and ``auxmol._basis[symbol]``).
    """
    key = (symbol, repr(orbital_basis), repr(aux_basis))
    if key not in _ATOM_CACHE:
        z = gto.charge(symbol)
        atom = gto.M(atom=[[symbol, (0.0, 0.0, 0.0)]], basis={symbol: orbital_basis}, spin=z % 2,
                     unit="Bohr", verbose=0)
        auxatom = make_auxmol(atom, {symbol: aux_basis})
        dm = hf.init_guess_by_minao(atom)
        _ATOM_CACHE[key] = np.asarray(fit_density(dm, atom, auxatom, kind="coulomb"))
    return _ATOM_CACHE[key]


def fastminao_guess(mol: gto.Mole, auxmol: gto.Mole, **_) -> InitialGuess:
    """Superposition of per-element isolated-atom MINAO coefficients (spec §4.3), projected along
    w onto wᵀp = N.

    Linear cost: one small fit per element (cached for the process), then a concatenation in
    atom order (PySCF orders density-basis functions atom by atom, every atom of an element
    carrying the same shells).
    """
    t0 = time.perf_counter()
    blocks = []
    for a in range(mol.natm):
        sym = mol.atom_symbol(a)
        blocks.append(atomic_minao_coeffs(sym, mol._basis[sym], auxmol._basis[sym]))
    coeffs = np.concatenate(blocks)
    if coeffs.shape[0] != auxmol.nao_nr():
        raise ValueError(f"fastminao: {coeffs.shape[0]} concatenated atomic coefficients but the "
                         f"density basis has {auxmol.nao_nr()} functions")
    return _finish("fastminao", coeffs, auxmol, mol.nelectron, t0)


def ks_guess(mol: gto.Mole, auxmol: gto.Mole, *, settings=None, **_) -> InitialGuess:
    """The fitted reference KS density p* (spec §4.3 'for evaluation'), with its KS energies.

    Runs PySCF restricted KS with ``settings`` (a :class:`~mofdft_jax.qchem.settings.LabelSettings`;
    default the paper's: PBE, grid level 2, 1 meV; the basis is ``mol``'s) and fits the converged
    density matrix with ``settings.fit`` (the label fit, default Coulomb + external row).
    """
    from mofdft_jax.qchem.ksdft import make_ks
    from mofdft_jax.qchem.settings import PAPER_SETTINGS

    settings = PAPER_SETTINGS if settings is None else settings
    t0 = time.perf_counter()
    mf = make_ks(mol, settings)
    mf.verbose = 0
    mf.kernel()
    dm = np.asarray(mf.make_rdm1())
    vhf = mf.get_veff(mol, dm)
    kinetic = float(np.einsum("ij,ji->", dm, mol.intor_symmetric("int1e_kin")))
    external = float(np.einsum("ij,ji->", dm, mol.intor_symmetric("int1e_nuc")))
    hartree, xc = float(vhf.ecoul), float(vhf.exc)
    e_nuc = float(mol.energy_nuc())
    reference = {"e_tot": kinetic + external + hartree + xc + e_nuc, "kinetic": kinetic,
                 "hartree": hartree, "xc": xc, "external": external, "e_nuc": e_nuc,
                 "converged": bool(mf.converged), "fit": settings.fit, "xc_functional": settings.xc,
                 "pyscf_e_tot": float(mf.e_tot)}
    coeffs, coulomb = _coulomb_fit(dm, mol, auxmol, kind=settings.fit)
    return _finish("ks", coeffs, auxmol, mol.nelectron, t0, reference, coulomb=coulomb)


def projminao_guess(mol: gto.Mole, auxmol: gto.Mole, *, functional=None, bundle=None,
                    geometry=None, **_) -> InitialGuess:
    """ProjMINAO (spec §4.3, SI B.5.2): the MINAO coefficients plus the learned correction.

    p = p_MINAO + Δp with Δp from the functional's Δp head evaluated at p_MINAO, un-standardised,
    mapped back to raw coefficients (Dᵀ M⁻ᵀ) and projected onto wᵀΔp = 0
    (:meth:`~mofdft_jax.model.functional.LearnedFunctional.delta_coeffs`).

    Args:
      functional: the learned functional (required; ``mofdft solve --functional CHECKPOINT``).
      bundle: the molecule's integral bundle (``norm``, ``atom_numbers``, ``coords``; built for
        ``mol``/``auxmol``).
      geometry: its adapter geometry (``functional.prepare(bundle)``).
    """
    from mofdft_jax.molecules.molecule import InputError
    from mofdft_jax.solver.learned import projminao_delta

    if functional is None or bundle is None or geometry is None:
        raise InputError("--init projminao needs a learned functional: pass --functional "
                         "CHECKPOINT (a checkpoint trained with the Δp head)")
    t0 = time.perf_counter()
    base = minao_guess(mol, auxmol)
    delta = np.asarray(projminao_delta(functional, base.coeffs, bundle, geometry))
    return InitialGuess(coeffs=base.coeffs + delta, name="projminao",
                        fitted_electrons=base.fitted_electrons, wall_s=time.perf_counter() - t0)


GuessFn = Callable[..., InitialGuess]

#: Initial guesses by name (``--init`` choices). Extend with :func:`register_initial_guess`.
INITIAL_GUESSES: dict[str, GuessFn] = {
    "minao": minao_guess,
    "huckel": huckel_guess,
    "fastminao": fastminao_guess,
    "ks": ks_guess,
    "projminao": projminao_guess,
}


def register_initial_guess(name: str, fn: GuessFn) -> None:
    """Add an initial guess ``fn(mol, auxmol, **options) -> InitialGuess`` under ``name``
    (e.g. ProjMINAO from the learned-functional layer)."""
    INITIAL_GUESSES[name] = fn


def initial_guess(name: str, mol: gto.Mole, auxmol: gto.Mole, **options) -> InitialGuess:
    """The initial guess ``name`` of :data:`INITIAL_GUESSES` for one molecule."""
    try:
        fn = INITIAL_GUESSES[name]
    except KeyError:
        raise ValueError(f"unknown initial guess {name!r}; choose one of "
                         f"{', '.join(INITIAL_GUESSES)}") from None
    return fn(mol, auxmol, **options)

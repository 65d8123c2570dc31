"""Per-SCF-step training labels of M-OFDFT (spec §1.3, §1.5–§1.7).

Every KS SCF step k ≥ 1 is one training point: its orbitals C⁽ᵏ⁾ are the exact ground state of a
non-interacting system in the one-body potential V_eff⁽ᵏ⁾ PySCF diagonalised at that step (the
DIIS-extrapolated Fock). For each step this module produces

* p⁽ᵏ⁾, the fitted density coefficients (Coulomb metric + external-energy row, spec §1.5);
* the kinetic label with the fitting correction (spec §1.6)

  .. math:: T_S^{(k)} = \\mathrm{tr}(Γ^{(k)} T) + E_{eff}(C^{(k)}) - E_{eff}(p^{(k)}),
            \\qquad E_{eff} = E_H + E_{XC} + E_{ext};

* the gradient label rebuilt from the DIIS weights in the density basis (spec §1.7)

  .. math:: ∇_p T_S^{(k)} := -v_{eff}^{(k)} = -Σ_{k'} π^{(k)}_{k'} ∇_p E_{eff}(p^{(k')});

* the three training targets and their gradients (spec §1.6–§1.7, §3.4):
  ``ts_res`` = T_S − T_APBE(p), ``txc`` = tr(ΓT) + E_XC(C) (fitting residuals of E_H and E_ext
  dropped), ``tot`` = the KS total energy of step k; gradients ∇T_S − ∇T_APBE, ∇T_S + ∇E_XC(p),
  ∇T_S + ∇E_eff(p) respectively;

plus the converged reference p*, the KS energy components, the Hellmann–Feynman forces of p* and the
MINAO / Hückel initial-guess coefficients (plain Coulomb fit, spec §4.3).

Perturbed-potential labels (``settings.perturbed_runs > 0``; :mod:`mofdft_jax.qchem.perturbation`):
each extra SCF run adds a random density-basis potential u⁽ᵏ⁾ to the Fock matrices of a window of
steps. Its steps are labelled like the plain run's, with the gradient label

.. math:: ∇_p T_S^{(k)} = -\\Big(Σ_{k'} π^{(k)}_{k'} ∇_p E_{eff}(p^{(k')}) + S u^{(k)}\\Big),

S the density-basis overlap, and are stored *before* the plain run's steps, so the last labelled
step is still p*. A perturbed run's steps before its first perturbed step repeat the plain run's
and are not stored again. ``step_run`` (0: the plain run, r ≥ 1: perturbed run r), ``step_cycle`` (the SCF
step number within its run), ``perturbation`` and ``perturbation_std`` say where each row came from.
"""

from __future__ import annotations

import dataclasses
import functools
import threading

import numpy as np

from mofdft_jax.molecules.molecule import Molecule
from mofdft_jax.qchem.settings import (ENERGY_KEYS, LABEL_PRESETS, PAPER_CONV_TOL, PAPER_SETTINGS,
                                       QUICK_SETTINGS, TEST_SETTINGS, LabelSettings)


@dataclasses.dataclass
class MoleculeLabels:
    """Labels of one molecule: K labelled SCF steps plus converged references (NumPy arrays).

    Attributes:
      molecule: the input :class:`Molecule`.
      settings: dict of the settings used (orbital basis, xc, grid_level, conv_tol, density_fit,
        aux_beta, fit, pyscf version, ...).
      n_steps: K, the number of labelled SCF steps (steps 1..K; the initial guess has no label).
      coeffs: ``(K, naux)`` p⁽ᵏ⁾.
      ts: ``(K,)`` T_S⁽ᵏ⁾ with the fitting correction (spec §1.6).
      ts_grad: ``(K, naux)`` gradient label −v_eff⁽ᵏ⁾ (spec §1.7, unprojected).
      targets: ``{"ts_res", "txc", "tot"}`` → ``(K,)`` target values (spec §1.6).
      target_grads: same keys → ``(K, naux)`` target gradients (spec §1.7 variants).
      step_energies: ``{"e_tot", "kinetic", "hartree", "xc", "external", "e_nuc"}`` → ``(K,)``
        KS energy components of step k, built from explicit terms.
      p_ref: ``(naux,)`` fitted coefficients of the converged KS density p*.
      ks_energy: converged KS energy components (same keys as ``step_energies``), floats.
      hf_forces_ref: ``(natm, 3)`` Hellmann–Feynman forces of p*, nuclear part included, Ha/Bohr.
      init_coeffs: ``{"minao", "huckel"}`` → ``(naux,)`` initial-guess coefficients (Coulomb fit).
      converged: whether the (plain) SCF converged.
      wall_s: wall time of the whole labelling, seconds.
      step_run: ``(K,)`` run of each labelled step: 0 the plain SCF, r ≥ 1 perturbed run r
        (``None``: all from the plain run, as in labels made by hand).
      step_cycle: ``(K,)`` SCF step number of each row within its run (1-based; ``None``: 1..K).
      perturbation: ``(K, naux)`` u⁽ᵏ⁾ added to the Fock matrix of the row's step (zeros where
        none; ``None``: no perturbed run).
      perturbation_std: ``(K,)`` σ_k of those draws (``None``: no perturbed run).
      response_dp: ``(K, M, naux)`` unit directions δp of the fitted density response of each
        step to M random potentials (:mod:`mofdft_jax.qchem.response`; ``None``: no curvature
        labels).
      response_hvp: ``{"ts", "ts_res", "txc", "tot"}`` → ``(K, M, naux)`` Hessian-vector labels
        ∇²T δp of T_S and of the three targets (unprojected; exact up to μ w).
    """

    molecule: Molecule
    settings: dict
    n_steps: int
    coeffs: np.ndarray
    ts: np.ndarray
    ts_grad: np.ndarray
    targets: dict
    target_grads: dict
    step_energies: dict
    p_ref: np.ndarray
    ks_energy: dict
    hf_forces_ref: np.ndarray
    init_coeffs: dict
    converged: bool
    wall_s: float
    step_run: np.ndarray | None = None
    step_cycle: np.ndarray | None = None
    perturbation: np.ndarray | None = None
    perturbation_std: np.ndarray | None = None
    response_dp: np.ndarray | None = None
    response_hvp: dict | None = None

    @property
    def naux(self) -> int:
        """Number of density-basis functions."""
        return int(self.p_ref.shape[0])

    def run_of_steps(self) -> np.ndarray:
        """``(K,)`` run index of every labelled step (0: plain SCF; r ≥ 1: perturbed run r)."""
        if self.step_run is None:
            return np.zeros(int(self.n_steps), dtype=np.int64)
        return np.asarray(self.step_run, dtype=np.int64)

    def cycle_of_steps(self) -> np.ndarray:
        """``(K,)`` SCF step number of every labelled step within its run (1-based)."""
        if self.step_cycle is None:
            return np.arange(1, int(self.n_steps) + 1, dtype=np.int64)
        return np.asarray(self.step_cycle, dtype=np.int64)

    def perturbed_steps(self) -> np.ndarray:
        """``(K,)`` bool: the step's Fock matrix carried an extra potential (u⁽ᵏ⁾ ≠ 0)."""
        if self.perturbation is None:
            return np.zeros(int(self.n_steps), dtype=bool)
        return np.any(np.asarray(self.perturbation) != 0, axis=1)


#: Points per call of the jitted point-wise energy-density function (fixed: compiled once).
POINT_CHUNK = 16384


@functools.cache
def _point_terms_fn(xc: str, kinetic: str):
    """Jitted ``(rho, sigma) (POINT_CHUNK,) -> {key: (e, ∂e/∂ρ, ∂e/∂σ)}`` for both functionals.

    The energy densities are the device world's masked ones
    (``functionals.MASKED_XC_ENERGY_DENSITIES[xc]``, ``MASKED_KINETIC_ENERGY_DENSITIES[kinetic]``),
    so E(p) = Σ_g w_g e(ρ_p, σ_p) is exactly ``XC_FUNCTIONALS[xc](p, bundle)`` on the same grid.
    The shape is fixed, so this compiles once per process whatever the molecule.
    """
    import jax
    import jax.numpy as jnp

    from mofdft_jax.functionals import (MASKED_KINETIC_ENERGY_DENSITIES,
                                        MASKED_XC_ENERGY_DENSITIES)

    fns = {"xc": MASKED_XC_ENERGY_DENSITIES[xc],
           "kinetic": MASKED_KINETIC_ENERGY_DENSITIES[kinetic]}

    def run(rho, sigma):
        out = {}
        for key, fn in fns.items():
            # point-wise function: the vjp with ones gives ∂e/∂ρ and ∂e/∂σ at every point
            e, vjp_fn = jax.vjp(fn, rho, sigma)
            v_rho, v_sigma = vjp_fn(jnp.ones_like(e))
            out[key] = (e, v_rho, v_sigma)
        return out

    return jax.jit(run)


def _point_terms(point_fn, rho: np.ndarray, sigma: np.ndarray) -> dict:
    """Apply the fixed-shape point function to 1-D arrays of any length (zero-padded chunks)."""
    npts = rho.size
    out = None
    for c0 in range(0, npts, POINT_CHUNK):
        c1 = min(c0 + POINT_CHUNK, npts)
        rho_c = np.zeros(POINT_CHUNK)
        sig_c = np.zeros(POINT_CHUNK)
        rho_c[:c1 - c0] = rho[c0:c1]
        sig_c[:c1 - c0] = sigma[c0:c1]
        res = point_fn(rho_c, sig_c)
        if out is None:
            out = {key: tuple(np.empty(npts) for _ in val) for key, val in res.items()}
        for key, val in res.items():
            for dst, src in zip(out[key], val):
                dst[c0:c1] = np.asarray(src)[:c1 - c0]
    return out


def evaluate_grid_terms(coeffs: np.ndarray, auxmol, grids, *, xc: str = "pbe",
                        kinetic: str = "apbe", max_memory_mb: float = 300.0
                        ) -> tuple[dict, dict]:
    """E_XC(p), T_base(p) and their gradients for many coefficient vectors, streaming the grid.

    For ρ_p = Σ_μ p_μ ω_μ and E[p] = Σ_g w_g e(ρ_g, σ_g), σ = |∇ρ|²:

    .. math:: ∂E/∂p_μ = Σ_g w_g [∂e/∂ρ ω_μ(r_g) + 2 ∂e/∂σ ∇ρ(r_g)·∇ω_μ(r_g)]

    The point-wise partials come from ``jax.vjp`` of the device world's energy densities
    (spec §1.7: "∇E_eff by autodiff"); the linear map p → (ρ, ∇ρ) and its transpose are done here
    block by block with the density-basis values from PySCF (``eval_ao`` with shell screening), so
    the ``ngrid × naux`` values are never stored and nothing is compiled per molecule. Checked
    against ``jax.grad`` of ``functionals.pbe_xc_energy`` / ``apbe_energy`` to 1e-10.

    Args:
      coeffs: ``(n, naux)`` coefficient vectors.
      auxmol: density-basis ``Mole``.
      grids: built PySCF ``Grids`` (e.g. the KS run's).
      max_memory_mb: memory for one block of basis values (PySCF ``block_loop``); a few hundred
        MB keeps the blocks cache- and page-friendly (1 GB blocks measured 1.5× slower).

    Returns:
      ``values {"xc", "kinetic"} -> (n,)`` and ``grads {"xc", "kinetic"} -> (n, naux)``.
    """
    from pyscf.dft import gen_grid, numint

    coeffs = np.asarray(coeffs, dtype=np.float64)
    n, naux = coeffs.shape
    point_fn = _point_terms_fn(xc, kinetic)
    keys = ("xc", "kinetic")
    values = {key: np.zeros(n) for key in keys}
    grads_t = np.zeros((naux, len(keys) * n))
    ni = numint.NumInt()
    non0tab = gen_grid.make_mask(auxmol, grids.coords)
    for ao, _, weight, _ in ni.block_loop(auxmol, grids, naux, deriv=1,
                                          max_memory=max_memory_mb, non0tab=non0tab):
        ngrid = ao.shape[1]
        # PySCF's eval_ao returns (4, ngrid, naux) views of (4, naux, ngrid) C-ordered memory:
        # work with that layout so every product below is a plain BLAS call without copies
        ao_t = ao.transpose(0, 2, 1)
        dens = coeffs @ ao_t  # (4, n, ngrid): ρ, ∂xρ, ∂yρ, ∂zρ
        sigma = np.einsum("xkg,xkg->kg", dens[1:], dens[1:])
        out = _point_terms(point_fn, dens[0].ravel(), sigma.ravel())
        # coefficients of ω, ∂xω, ∂yω, ∂zω per point and (functional, row): (4, ngrid, 2n)
        coef = np.empty((4, ngrid, len(keys) * n))
        for i, key in enumerate(keys):
            e, v_rho, v_sigma = (x.reshape(n, ngrid) for x in out[key])
            values[key] += e @ weight
            rows = slice(i * n, (i + 1) * n)
            coef[0, :, rows] = (weight * v_rho).T
            coef[1:, :, rows] = ((2.0 * weight * v_sigma) * dens[1:]).transpose(0, 2, 1)
        for x in range(4):
            grads_t += ao_t[x] @ coef[x]
    grads = {key: np.ascontiguousarray(grads_t[:, i * n:(i + 1) * n].T)
             for i, key in enumerate(keys)}
    return values, grads


_ATOMIC_HF_CACHE: dict = {}
_ATOMIC_HF_LOCK = threading.Lock()


def huckel_density_matrix(mol) -> np.ndarray:
    """PySCF's extended-Hückel initial-guess density matrix (``init_guess_by_huckel``).

    PySCF runs a spherically averaged atomic HF calculation per element on every call
    (``atom_hf.get_atm_nrhf``); here its results are cached per (element, orbital basis), so a
    dataset of molecules of the same elements pays for them once. The density matrix is identical.
    """
    from pyscf.scf import atom_hf, hf

    def key(m, element):
        return (element, repr(m._basis.get(element)), repr(m._pseudo.get(element)), bool(m.cart))

    def cached_get_atm_nrhf(m, *args, **kwargs):
        elements = {a[0] for a in m._atom}
        if all(key(m, el) in _ATOMIC_HF_CACHE for el in elements):
            return {el: _ATOMIC_HF_CACHE[key(m, el)] for el in elements}
        out = original(m, *args, **kwargs)
        for el, value in out.items():
            _ATOMIC_HF_CACHE[key(m, el)] = value
        return out

    with _ATOMIC_HF_LOCK:
        original = atom_hf.get_atm_nrhf
        atom_hf.get_atm_nrhf = cached_get_atm_nrhf
        try:
            return hf.init_guess_by_huckel(mol)
        finally:
            atom_hf.get_atm_nrhf = original


def compute_step_labels(run, auxmol, coeffs: np.ndarray, coulomb: np.ndarray, v_ext: np.ndarray,
                        grids, overlap: np.ndarray | None = None) -> dict:
    """Value and gradient labels of every SCF step from a recorded KS run (spec §1.6–§1.7).

    For a perturbed run (``run.perturbation`` not ``None``) the gradient label of step k is
    −(v_eff⁽ᵏ⁾ + S u⁽ᵏ⁾) (module docstring); the value labels are unchanged.

    Args:
      run: :class:`~mofdft_jax.qchem.ksdft.KSRun` (steps 0..K, step 0 the initial guess).
      auxmol: density-basis molecule.
      coulomb: ``(naux, naux)`` W̃; v_ext: ``(naux,)``.
      grids: built PySCF ``Grids`` for E_XC(p) and T_APBE(p) (the KS grid).
      coeffs: ``(K+1, naux)`` fitted p⁽ᵏ⁾ of all steps including the initial guess.
      overlap: ``(naux, naux)`` density-basis overlap S (computed from ``auxmol`` if needed and
        not given).

    Returns:
      dict with ``ts (K,)``, ``ts_grad (K, naux)``, ``targets``, ``target_grads`` (labelled steps
      1..K) and the per-step (0..K) pieces ``e_eff_p``, ``grad_e_eff_p``, ``xc_p``, ``t_apbe_p``.
    """
    values, grads = evaluate_grid_terms(coeffs, auxmol, grids, xc=run.settings.xc.lower())
    xc_p = values["xc"]
    t_apbe_p = values["kinetic"]
    w2 = np.asarray(coulomb)
    v_ext = np.asarray(v_ext)
    wp = coeffs @ w2
    e_eff_p = 0.5 * np.einsum("kn,kn->k", coeffs, wp) + coeffs @ v_ext + xc_p
    grad_e_eff_p = wp + v_ext[None] + grads["xc"]

    e = run.energies
    e_eff_c = e["hartree"] + e["xc"] + e["external"]
    steps = np.arange(1, run.n_steps + 1)
    ts = e["kinetic"][steps] + e_eff_c[steps] - e_eff_p[steps]
    # v_eff^(k) = Σ_i π_i^(k) ∇E_eff(p^(s_i)) (spec §1.7)
    v_eff = np.stack([run.diis_weights[k] @ grad_e_eff_p[run.diis_steps[k]] for k in steps])
    if run.perturbation is not None:
        # the orbitals of step k are the ground state of v_eff + v_pert: add ∇_p ∫ v_pert ρ_p = S u
        s_ovlp = auxmol.intor("int1e_ovlp") if overlap is None else np.asarray(overlap)
        v_eff = v_eff + run.perturbation[steps] @ s_ovlp
    ts_grad = -v_eff
    targets = {
        "ts_res": ts - t_apbe_p[steps],
        "txc": e["kinetic"][steps] + e["xc"][steps],
        "tot": e["e_tot"][steps],
    }
    target_grads = {
        "ts_res": ts_grad - grads["kinetic"][steps],
        "txc": ts_grad + grads["xc"][steps],
        "tot": ts_grad + grad_e_eff_p[steps],
    }
    return {"ts": ts, "ts_grad": ts_grad, "targets": targets, "target_grads": target_grads,
            "e_eff_p": e_eff_p, "grad_e_eff_p": grad_e_eff_p, "xc_p": xc_p, "t_apbe_p": t_apbe_p}


def compute_labels(molecule: Molecule, settings: LabelSettings = PAPER_SETTINGS, *,
                   verbose: int = 0, on_step=None) -> MoleculeLabels:
    """Run KS-DFT with ``settings`` and compute all labels of ``molecule`` (spec §1.3–§1.7).

    Steps: recorded KS run (:func:`~mofdft_jax.qchem.ksdft.run_ks`), then
    ``settings.perturbed_runs`` perturbed runs from the same initial guess (each with its own
    seeded draws, :func:`perturbed_runs`), then :func:`labels_from_run`. ``wall_s`` covers all.
    """
    import time

    from mofdft_jax.qchem.ksdft import run_ks

    t0 = time.perf_counter()
    run = run_ks(molecule, settings, verbose=verbose, on_step=on_step)
    extra = perturbed_runs(run, verbose=verbose) if run.converged else []
    labels = labels_from_run(run, extra)
    labels.wall_s = time.perf_counter() - t0
    return labels


def perturbed_runs(run, *, verbose: int = 0) -> list:
    """The ``run.settings.perturbed_runs`` perturbed SCF runs of a plain run's molecule.

    Run r = 1 … R draws its potentials from :func:`~mofdft_jax.qchem.perturbation.perturbation_seed`
    (``settings.perturb_seed``, r, the geometry). A perturbed run that does not converge after its
    window is kept: its steps are exact non-interacting ground states all the same; only p* needs
    a converged SCF, and that comes from the plain run.
    """
    from mofdft_jax.qchem.basis import make_auxbasis, make_auxmol
    from mofdft_jax.qchem.ksdft import run_ks
    from mofdft_jax.qchem.perturbation import FockPerturbation, overlap_3c, perturbation_seed

    settings = run.settings
    if not int(settings.perturbed_runs):
        return []
    auxmol = make_auxmol(run.mol, make_auxbasis(settings.density_basis_source, settings.aux_beta))
    schedule = settings.perturbation_schedule()
    tensor = overlap_3c(run.mol, auxmol)
    mol = run.molecule
    out = []
    for r in range(1, int(settings.perturbed_runs) + 1):
        seed = perturbation_seed(mol.numbers, mol.coords_bohr, r, int(settings.perturb_seed))
        pert = FockPerturbation(run.mol, auxmol, schedule, seed, tensor=tensor)
        out.append(run_ks(mol, settings, mol=run.mol, verbose=verbose, perturbation=pert))
    return out


def labels_from_run(run, perturbed=()) -> MoleculeLabels:
    """All labels of a recorded KS run and of its perturbed runs (spec §1.3–§1.7).

    Fit every step's density matrix (``settings.fit``, one blocked 3-centre pass for all steps of
    all runs and both initial guesses); grid terms E_XC(p), T_APBE(p) and their gradients on the
    plain run's KS grid (:func:`evaluate_grid_terms`); T_S labels with the fitting correction;
    −v_eff⁽ᵏ⁾ (− S u⁽ᵏ⁾ for perturbed steps) from the DIIS weights; the three targets; p*, KS
    components, HF forces of p*, MINAO and Hückel initial coefficients (plain Coulomb fit), all
    from the plain run. Rows: perturbed run 1 … R, then the plain run (its last step is p*).

    Args:
      run: the plain :class:`~mofdft_jax.qchem.ksdft.KSRun`.
      perturbed: perturbed runs of the same molecule and settings (:func:`perturbed_runs`).
    """
    import time

    import pyscf

    from mofdft_jax.qchem.basis import make_auxbasis, make_auxmol
    from mofdft_jax.qchem.fitting import DensityFitter, project_density_matrices
    from mofdft_jax.qchem.grids import make_grids
    from mofdft_jax.qchem.integrals import compute_v_ext, hf_forces
    from mofdft_jax.qchem.ksdft import to_numpy
    from mofdft_jax.qchem.perturbation import geometry_seed_words

    from mofdft_jax.functionals import MASKED_XC_ENERGY_DENSITIES

    t0 = time.perf_counter()
    settings = run.settings
    mol = run.mol
    if settings.xc.lower() not in MASKED_XC_ENERGY_DENSITIES:
        raise ValueError(f"labels need the XC functional in the JAX functionals too: "
                         f"{settings.xc!r} is not one of {sorted(MASKED_XC_ENERGY_DENSITIES)}")
    auxmol = make_auxmol(mol, make_auxbasis(settings.density_basis_source, settings.aux_beta))
    w2 = auxmol.intor("int2c2e")
    v_ext = compute_v_ext(mol, auxmol)
    fitter = DensityFitter(mol, auxmol, settings.fit, coulomb=w2, v_ext=v_ext)
    init_keys = ("minao", "huckel")
    # the SCF's own initial guess is step 0; the other one is built here (PySCF get_init_guess)
    init_dms = {"minao": run.dms[0] if settings.init_guess.lower() == "minao"
                else to_numpy(run.mf.get_init_guess(mol, "minao")),
                "huckel": run.dms[0] if settings.init_guess.lower() == "huckel"
                else huckel_density_matrix(mol)}
    runs = list(perturbed) + [run]
    for other in perturbed:
        same_geometry = (np.array_equal(other.molecule.numbers, run.molecule.numbers)
                         and np.allclose(other.molecule.coords_bohr, run.molecule.coords_bohr))
        same_basis = all(getattr(other.settings, key) == getattr(settings, key)
                         for key in ("basis", "xc", "grid_level", "aux_beta", "aux_orbital_basis",
                                     "fit", "use_gpu"))
        if not (same_basis and same_geometry):
            raise ValueError("perturbed runs must be of the plain run's molecule, bases, XC "
                             "functional, grid and fit")
        if other.perturbation is None:
            raise ValueError("labels_from_run: a run passed as perturbed has no perturbation")
    # one blocked 3-centre pass for every density matrix (SCF steps and initial guesses)
    all_dms = np.concatenate([r.dms for r in runs] + [np.stack([init_dms[k] for k in init_keys])])
    proj = project_density_matrices(all_dms, mol, auxmol)
    bounds = np.cumsum([0] + [r.dms.shape[0] for r in runs])
    run_coeffs = [fitter.fit(r.dms, projections=proj[b0:b1],
                             external_energies=r.energies["external"])
                  for r, b0, b1 in zip(runs, bounds[:-1], bounds[1:])]
    init_coeffs = {k: fitter.fit(init_dms[k], projections=proj[bounds[-1] + i], kind="coulomb")
                   for i, k in enumerate(init_keys)}

    # the KS grid itself, so E_XC(C^(k)) and E_XC(p^(k)) are integrated on the same points
    grids = make_grids(mol, settings.grid_level) if settings.use_gpu else run.mf.grids
    s_ovlp = auxmol.intor("int1e_ovlp") if perturbed else None
    run_steps = [compute_step_labels(r, auxmol, c, w2, v_ext, grids, overlap=s_ovlp)
                 for r, c in zip(runs, run_coeffs)]
    # rows kept per run (indices of steps 1..K): a perturbed run's steps before its first
    # perturbed step are the plain run's steps again (same guess, same SCF), so they are dropped
    rows = [_rows_from_first_perturbed_step(r) for r in perturbed] + [np.arange(run.n_steps)]
    step = _stack_rows(run_steps, rows)
    coeffs = np.concatenate([c[1:][i] for c, i in zip(run_coeffs, rows)])
    p_ref = run_coeffs[-1][-1]
    run_index = [*range(1, len(perturbed) + 1), 0]
    step_run = np.concatenate([np.full(len(i), r, dtype=np.int64) for r, i in zip(run_index, rows)])
    step_cycle = np.concatenate([i + 1 for i in rows]).astype(np.int64)
    if perturbed:
        naux = p_ref.shape[0]
        perturbation = np.concatenate([r.perturbation[1:][i] if r.perturbation is not None
                                       else np.zeros((len(i), naux)) for r, i in zip(runs, rows)])
        perturbation_std = np.concatenate([r.perturbation_std[1:][i] if r.perturbation is not None
                                           else np.zeros(len(i)) for r, i in zip(runs, rows)])
    else:
        perturbation = perturbation_std = None
    step_energies = {k: np.concatenate([r.energies[k][1:][i] for r, i in zip(runs, rows)])
                     for k in run.energies}
    response_dp = response_hvp = None
    if int(getattr(settings, "response_directions", 0)):
        response_dp, response_hvp = compute_response_labels(
            runs, rows, coeffs, fitter, auxmol, grids, w2, xc=settings.xc.lower(),
            n_dirs=int(settings.response_directions),
            seed=[int(settings.perturb_seed), 7919]
            + geometry_seed_words(run.molecule.numbers, run.molecule.coords_bohr))
    settings_dict = settings.to_dict()
    settings_dict.update({
        "pyscf_version": pyscf.__version__,
        "density_fit_used": settings.uses_density_fit(mol.natm),
        "nao": int(mol.nao_nr()),
        "naux": int(auxmol.nao_nr()),
        "density_basis_source": settings.density_basis_source,
    })
    return MoleculeLabels(
        molecule=run.molecule,
        settings=settings_dict,
        n_steps=int(coeffs.shape[0]),
        coeffs=coeffs,
        ts=step["ts"],
        ts_grad=step["ts_grad"],
        targets=step["targets"],
        target_grads=step["target_grads"],
        step_energies=step_energies,
        p_ref=p_ref,
        ks_energy=run.final_energies(),
        hf_forces_ref=hf_forces(p_ref, mol, auxmol),
        init_coeffs=init_coeffs,
        converged=run.converged,
        wall_s=sum(r.wall_s for r in runs) + time.perf_counter() - t0,
        step_run=step_run,
        step_cycle=step_cycle,
        perturbation=perturbation,
        perturbation_std=perturbation_std,
        response_dp=response_dp,
        response_hvp=response_hvp,
    )


def compute_response_labels(runs, rows, coeffs: np.ndarray, fitter, auxmol, grids,
                            coulomb: np.ndarray, *, xc: str, n_dirs: int, seed
                            ) -> tuple[np.ndarray, dict]:
    """Curvature labels of every kept row (:mod:`mofdft_jax.qchem.response`).

    Args:
      runs, rows: the KS runs and, per run, the kept step indices (0-based into steps 1..K), in
        the row order of the labels.
      coeffs: ``(K_total, naux)`` the fitted p of those rows.
      fitter: the labels' :class:`~mofdft_jax.qchem.fitting.DensityFitter`.
      grids: the grid of the labels' grid terms; coulomb: W̃.
      n_dirs: M random potentials per row; seed: generator seed words.

    Returns:
      ``(response_dp (K, M, naux), {"ts", "ts_res", "txc", "tot"} -> (K, M, naux))``.
    """
    from pyscf import lib

    from mofdft_jax.qchem.perturbation import overlap_3c
    from mofdft_jax.qchem.response import (FD_RELATIVE_STEP, density_response,
                                           response_directions)

    mol = runs[0].mol
    naux = int(auxmol.nao_nr())
    s_ao = mol.intor_symmetric("int1e_ovlp")
    s_aux = auxmol.intor("int1e_ovlp")
    nocc = mol.nelectron // 2
    tensor = overlap_3c(mol, auxmol)
    n_rows = coeffs.shape[0]
    du = response_directions(seed, n_rows, n_dirs, naux)
    d_gamma = np.empty((n_rows, n_dirs, mol.nao_nr(), mol.nao_nr()))
    row = 0
    for r, kept in zip(runs, rows):
        for i in kept:
            potentials = np.stack([lib.unpack_tril(du[row, m] @ tensor) for m in range(n_dirs)])
            d_gamma[row] = density_response(r.fock_diag[i + 1], s_ao, nocc, potentials)
            row += 1
    dp = fitter.fit(d_gamma.reshape(-1, *d_gamma.shape[2:])).reshape(n_rows, n_dirs, naux)
    scale = np.linalg.norm(dp, axis=-1, keepdims=True)
    dp, du = dp / scale, du / scale
    hvp_ts = -du @ s_aux
    # grid terms: central differences of the analytic gradients along δp
    h = FD_RELATIVE_STEP * np.linalg.norm(coeffs, axis=-1)[:, None, None]
    shifted = np.concatenate([(coeffs[:, None] + h * dp).reshape(-1, naux),
                              (coeffs[:, None] - h * dp).reshape(-1, naux)])
    _, grads = evaluate_grid_terms(shifted, auxmol, grids, xc=xc)
    n = n_rows * n_dirs
    hvp = {key: ((g[:n] - g[n:]).reshape(n_rows, n_dirs, naux) / (2.0 * h))
           for key, g in grads.items()}
    return dp, {"ts": hvp_ts, "ts_res": hvp_ts - hvp["kinetic"], "txc": hvp_ts + hvp["xc"],
                "tot": hvp_ts + hvp["xc"] + dp @ np.asarray(coulomb)}


def _rows_from_first_perturbed_step(run) -> np.ndarray:
    """Indices (0-based, into steps 1..K) of a perturbed run's steps from its first perturbed step
    on (all steps if no step carried a potential, e.g. σ = 0)."""
    nonzero = np.flatnonzero(np.any(run.perturbation[1:] != 0, axis=1))
    first = int(nonzero[0]) if nonzero.size else 0
    return np.arange(first, run.n_steps)


def _stack_rows(run_steps: list[dict], rows: list[np.ndarray]) -> dict:
    """The kept rows ``rows[r]`` of each run's ``compute_step_labels`` dict, stacked in run order."""
    def cat(get):
        return np.concatenate([get(d)[i] for d, i in zip(run_steps, rows)])

    out = {"ts": cat(lambda d: d["ts"]), "ts_grad": cat(lambda d: d["ts_grad"])}
    for key in ("targets", "target_grads"):
        out[key] = {t: cat(lambda d: d[key][t]) for t in run_steps[0][key]}
    return out


__all__ = ["ENERGY_KEYS", "LABEL_PRESETS", "PAPER_CONV_TOL", "PAPER_SETTINGS", "QUICK_SETTINGS",
           "TEST_SETTINGS", "LabelSettings", "MoleculeLabels", "compute_labels",
           "compute_step_labels", "evaluate_grid_terms", "huckel_density_matrix",
           "compute_response_labels", "labels_from_run", "perturbed_runs"]

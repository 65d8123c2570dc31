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
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mofdft_jax.molecules.molecule import Molecule
from mofdft_jax.qchem.settings import (ENERGY_KEYS, LABEL_PRESETS, PAPER_CONV_TOL, PAPER_SETTINGS,
                                       QUICK_SETTINGS, TARGETS, TEST_SETTINGS, LabelSettings)


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
      converged: whether the SCF converged.
      wall_s: wall time of the whole labelling, seconds.
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

    @property
    def naux(self) -> int:
        """Number of density-basis functions."""
        return int(self.p_ref.shape[0])


def _grid_terms_fn(xc: str, with_kinetic: bool):
    """A jitted ``(coeffs (K, naux), bundle) -> values, grads`` of E_XC and T_APBE per row.

    Values ``{"xc": (K,), "kinetic": (K,)}`` and gradients of the same keys ``(K, naux)`` by JAX
    autodiff (spec §1.7). All K rows and both terms share one forward and one (batched) backward
    pass over the grid, so the density-basis values are streamed twice in total.
    """
    import jax
    import jax.numpy as jnp

    from mofdft_jax.functionals import grid_energy_terms

    kinetic = "apbe" if with_kinetic else None

    def run(coeffs, bundle):
        def all_rows(c):
            return jax.vmap(lambda p: grid_energy_terms(p, bundle, kinetic=kinetic, xc=xc))(c)

        vals, vjp_fn = jax.vjp(all_rows, coeffs)
        keys = sorted(vals)
        ones = jnp.ones(coeffs.shape[0], dtype=coeffs.dtype)
        cots = {k: jnp.stack([ones if k == key else 0 * ones for key in keys]) for k in keys}
        grads = jax.vmap(lambda cot: vjp_fn(cot)[0])(cots)
        return vals, {key: grads[i] for i, key in enumerate(keys)}

    return jax.jit(run)


def compute_step_labels(run, auxmol, bundle, coeffs: np.ndarray) -> dict:
    """Value and gradient labels of every SCF step from a recorded KS run (spec §1.6–§1.7).

    Args:
      run: :class:`~mofdft_jax.qchem.ksdft.KSRun` (steps 0..K, step 0 the initial guess).
      auxmol: density-basis molecule.
      bundle: :class:`~mofdft_jax.bundle.IntegralBundle` with a grid.
      coeffs: ``(K+1, naux)`` fitted p⁽ᵏ⁾ of all steps including the initial guess.

    Returns:
      dict with ``ts (K,)``, ``ts_grad (K, naux)``, ``targets``, ``target_grads`` (labelled steps
      1..K) and the per-step (0..K) pieces ``e_eff_p``, ``grad_e_eff_p``, ``xc_p``, ``t_apbe_p``.
    """
    import jax.numpy as jnp

    xc_key = run.settings.xc.lower()
    values, grads = _grid_terms_fn(xc_key, with_kinetic=True)(jnp.asarray(coeffs), bundle)
    xc_p = np.asarray(values["xc"])
    t_apbe_p = np.asarray(values["kinetic"])
    w2 = np.asarray(bundle.coulomb)
    v_ext = np.asarray(bundle.v_ext)
    wp = coeffs @ w2
    e_eff_p = 0.5 * np.einsum("kn,kn->k", coeffs, wp) + coeffs @ v_ext + xc_p
    grad_e_eff_p = wp + v_ext[None] + np.asarray(grads["xc"])

    e = run.energies
    e_eff_c = e["hartree"] + e["xc"] + e["external"]
    steps = np.arange(1, run.n_steps + 1)
    ts = e["kinetic"][steps] + e_eff_c[steps] - e_eff_p[steps]
    # v_eff^(k) = Σ_i π_i^(k) ∇E_eff(p^(s_i)) (spec §1.7)
    v_eff = np.stack([run.diis_weights[k] @ grad_e_eff_p[run.diis_steps[k]] for k in steps])
    ts_grad = -v_eff
    targets = {
        "ts_res": ts - t_apbe_p[steps],
        "txc": e["kinetic"][steps] + e["xc"][steps],
        "tot": e["e_tot"][steps],
    }
    target_grads = {
        "ts_res": ts_grad - np.asarray(grads["kinetic"])[steps],
        "txc": ts_grad + np.asarray(grads["xc"])[steps],
        "tot": ts_grad + grad_e_eff_p[steps],
    }
    return {"ts": ts, "ts_grad": ts_grad, "targets": targets, "target_grads": target_grads,
            "e_eff_p": e_eff_p, "grad_e_eff_p": grad_e_eff_p, "xc_p": xc_p, "t_apbe_p": t_apbe_p}


def compute_init_coeffs(mf, mol, auxmol, fitter_coulomb, keys=("minao", "huckel"),
                        known: dict | None = None) -> dict:
    """Initial-guess coefficients: PySCF ``get_init_guess(key)`` then a plain Coulomb fit (§4.3)."""
    known = known or {}
    out = {}
    for key in keys:
        dm = known.get(key)
        if dm is None:
            dm = mf.get_init_guess(mol, key)
        out[key] = fitter_coulomb.fit(np.asarray(dm))
    return out


def compute_labels(molecule: Molecule, settings: LabelSettings = PAPER_SETTINGS, *,
                   verbose: int = 0, on_step=None) -> MoleculeLabels:
    """Run KS-DFT with ``settings`` and compute all labels of ``molecule`` (spec §1.3–§1.7).

    Steps: recorded KS run (:func:`~mofdft_jax.qchem.ksdft.run_ks`); fit every step's density
    matrix (``settings.fit``); grid terms E_XC(p), T_APBE(p) and their gradients by JAX autodiff;
    T_S labels with the fitting correction; −v_eff⁽ᵏ⁾ from the DIIS weights; the three targets; p*,
    KS components, HF forces of p*, MINAO and Hückel initial coefficients.
    """
    import time

    import pyscf

    from mofdft_jax.qchem.basis import make_auxbasis, make_auxmol
    from mofdft_jax.qchem.fitting import DensityFitter, project_density_matrices
    from mofdft_jax.qchem.integrals import build_integral_bundle, hf_forces
    from mofdft_jax.qchem.ksdft import run_ks, to_numpy

    t0 = time.perf_counter()
    run = run_ks(molecule, settings, verbose=verbose, on_step=on_step)
    mol = run.mol
    auxmol = make_auxmol(mol, make_auxbasis(settings.density_basis_source, settings.aux_beta))
    bundle = build_integral_bundle(mol, auxmol, grid_level=settings.grid_level,
                                   with_forces=False, with_overlap=False)
    w2 = np.asarray(bundle.coulomb)
    v_ext = np.asarray(bundle.v_ext)
    fitter = DensityFitter(mol, auxmol, settings.fit, coulomb=w2, v_ext=v_ext)
    init_dms = {}
    if settings.init_guess.lower() in ("minao", "huckel"):
        init_dms[settings.init_guess.lower()] = run.dms[0]
    init_keys = ("minao", "huckel")
    extra_dms = [to_numpy(run.mf.get_init_guess(mol, k)) for k in init_keys if k not in init_dms]
    for k, dm in zip([k for k in init_keys if k not in init_dms], extra_dms):
        init_dms[k] = dm
    # one blocked 3-centre pass for every density matrix (SCF steps and initial guesses)
    all_dms = np.concatenate([run.dms, np.stack([init_dms[k] for k in init_keys])])
    proj = project_density_matrices(all_dms, mol, auxmol)
    nsteps = run.dms.shape[0]
    coeffs = fitter.fit(run.dms, projections=proj[:nsteps],
                        external_energies=run.energies["external"])
    coulomb_fitter = (fitter if settings.fit == "coulomb"
                      else DensityFitter(mol, auxmol, "coulomb", coulomb=w2, v_ext=v_ext))
    init_coeffs = {k: coulomb_fitter.fit(init_dms[k], projections=proj[nsteps + i])
                   for i, k in enumerate(init_keys)}

    step = compute_step_labels(run, auxmol, bundle, coeffs)
    p_ref = coeffs[-1]
    steps = slice(1, nsteps)
    settings_dict = settings.to_dict()
    settings_dict.update({
        "pyscf_version": pyscf.__version__,
        "density_fit_used": settings.uses_density_fit(mol.natm),
        "nao": int(mol.nao_nr()),
        "naux": int(auxmol.nao_nr()),
        "density_basis_source": settings.density_basis_source,
    })
    return MoleculeLabels(
        molecule=molecule,
        settings=settings_dict,
        n_steps=run.n_steps,
        coeffs=coeffs[steps],
        ts=step["ts"],
        ts_grad=step["ts_grad"],
        targets=step["targets"],
        target_grads=step["target_grads"],
        step_energies={k: v[steps].copy() for k, v in run.energies.items()},
        p_ref=p_ref,
        ks_energy=run.final_energies(),
        hf_forces_ref=hf_forces(p_ref, mol, auxmol),
        init_coeffs=init_coeffs,
        converged=run.converged,
        wall_s=time.perf_counter() - t0,
    )

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
from mofdft_jax.qchem.basis import ETB_BETA, PAPER_BASIS

#: 1 meV in Hartree: the paper's SCF convergence threshold on the energy change (spec §1.1).
PAPER_CONV_TOL = 3.674932e-5
#: Label target names (spec §3.4): residual KEDF, kinetic + XC, total energy.
TARGETS = ("ts_res", "txc", "tot")
#: KS energy component names stored per step and at convergence.
ENERGY_KEYS = ("e_tot", "kinetic", "hartree", "xc", "external", "e_nuc")


@dataclasses.dataclass(frozen=True)
class LabelSettings:
    """KS-DFT and labelling settings; the defaults are the paper's (spec §1.1, §1.4, §1.5).

    Attributes:
      basis: orbital basis (paper: 6-31G(2df,p)).
      xc: exchange-correlation functional, PySCF name (paper: PBE).
      grid_level: PySCF grid level for the KS XC and for the density-basis grid terms (paper: 2).
      conv_tol: SCF convergence on the energy change, Hartree (paper: 1 meV).
      max_cycle: maximum SCF cycles.
      init_guess: PySCF initial guess of the SCF (paper: MINAO).
      diis_space: CDIIS subspace size (PySCF default 8).
      density_fit: ``"auto"`` (density fitting above ``df_min_atoms`` atoms, as the paper),
        ``True`` or ``False``.
      df_auxbasis: auxiliary basis of the SCF density fitting (paper: def2-universal-jfit).
      df_min_atoms: density fitting is used for molecules with more atoms than this (paper: 30).
      aux_beta: even-tempered progression factor of the density basis (paper: 2.5).
      aux_orbital_basis: orbital basis the density basis is generated from (the reference
        molecule, spec §1.4); ``None`` means the paper's 6-31G(2df,p) whatever ``basis`` is, so the
        density basis (and the model's slot layout) never changes with the cheap presets.
      fit: density fit of the labels: ``"coulomb+ext"`` (paper, stacked least squares),
        ``"coulomb+ext-metric"`` (minimiser of the written objective, spec §1.5 caveat) or
        ``"coulomb"``.
      with_gradients: compute gradient labels (needs the grid and JAX autodiff).
      use_gpu: run the SCF with gpu4pyscf (``mf.to_gpu()``); labels are computed on the host.
      max_memory_mb: PySCF memory limit.
    """

    basis: str = PAPER_BASIS
    xc: str = "pbe"
    grid_level: int = 2
    conv_tol: float = PAPER_CONV_TOL
    max_cycle: int = 100
    init_guess: str = "minao"
    diis_space: int = 8
    density_fit: bool | str = "auto"
    df_auxbasis: str = "def2-universal-jfit"
    df_min_atoms: int = 30
    aux_beta: float = ETB_BETA
    aux_orbital_basis: str | None = None
    fit: str = "coulomb+ext"
    with_gradients: bool = True
    use_gpu: bool = False
    max_memory_mb: int = 16000

    def uses_density_fit(self, natm: int) -> bool:
        """Whether the SCF of a molecule with ``natm`` atoms uses density fitting."""
        if self.density_fit == "auto":
            return natm > self.df_min_atoms
        return bool(self.density_fit)

    def replace(self, **changes) -> "LabelSettings":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain dict of the settings (stored with the data)."""
        return dataclasses.asdict(self)


#: The paper's settings (spec §1.1).
PAPER_SETTINGS = LabelSettings()
#: Cheap settings for tests and the ``quick`` preset: small orbital basis, coarse grid. The density
#: basis is still the paper's ETB of 6-31G(2df,p) (``aux_orbital_basis=None``).
QUICK_SETTINGS = LabelSettings(basis="6-31G", grid_level=1)
#: Cheapest settings (unit tests): STO-3G, grid level 0 (energies are not meaningful).
TEST_SETTINGS = LabelSettings(basis="sto-3g", grid_level=0)
#: Named presets.
LABEL_PRESETS = {"paper": PAPER_SETTINGS, "quick": QUICK_SETTINGS, "test": TEST_SETTINGS}


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

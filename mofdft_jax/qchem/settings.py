"""KS-DFT and labelling settings (spec §1.1, §1.4, §1.5): the paper's defaults and cheap presets."""

from __future__ import annotations

import dataclasses

from mofdft_jax.qchem.basis import ETB_BETA, PAPER_BASIS

#: 1 meV in Hartree: the paper's SCF convergence threshold on the energy change (spec §1.1).
PAPER_CONV_TOL = 3.674932e-5
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
      max_cycle: maximum SCF cycles (PySCF default 50).
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
      use_gpu: run the SCF with gpu4pyscf (``mf.to_gpu()``); labels are computed on the host.
      max_memory_mb: PySCF memory limit.
      perturbed_runs: number of extra SCF runs per molecule whose Fock matrices get random
        density-basis potentials (:mod:`mofdft_jax.qchem.perturbation`; 0: the paper's plain
        labels). Their steps are labelled too, before the plain run's steps.
      perturb_first_step, perturb_last_step: the window of perturbed SCF steps (1-based).
      perturb_start_std, perturb_end_std: σ₀, σ₁ of the linearly falling σ_k (STRUCTURES25:
        0.1 and 0.002 over their cycles 4–24).
      perturb_seed: seed of the draws (combined with the run index and the geometry).
      response_directions: Hessian-vector (curvature) labels per labelled step from the exact
        non-interacting density response to this many random density-basis potentials
        (:mod:`mofdft_jax.qchem.response`; 0: none).
    """

    basis: str = PAPER_BASIS
    xc: str = "pbe"
    grid_level: int = 2
    conv_tol: float = PAPER_CONV_TOL
    max_cycle: int = 50
    init_guess: str = "minao"
    diis_space: int = 8
    density_fit: bool | str = "auto"
    df_auxbasis: str = "def2-universal-jfit"
    df_min_atoms: int = 30
    aux_beta: float = ETB_BETA
    aux_orbital_basis: str | None = None
    fit: str = "coulomb+ext"
    use_gpu: bool = False
    max_memory_mb: int = 16000
    perturbed_runs: int = 0
    perturb_first_step: int = 5
    perturb_last_step: int = 25
    perturb_start_std: float = 0.1
    perturb_end_std: float = 0.002
    perturb_seed: int = 0
    response_directions: int = 0

    def __post_init__(self):
        if int(self.response_directions) < 0:
            raise ValueError(f"response_directions must be >= 0, got {self.response_directions}")
        if int(self.perturbed_runs) < 0:
            raise ValueError(f"perturbed_runs must be >= 0, got {self.perturbed_runs}")
        if self.perturbed_runs:
            self.perturbation_schedule()  # validates the window and the σ values
            if self.perturb_last_step >= self.max_cycle:
                raise ValueError(f"perturb_last_step ({self.perturb_last_step}) must be below "
                                 f"max_cycle ({self.max_cycle}): the SCF must converge after it")

    def perturbation_schedule(self):
        """The :class:`~mofdft_jax.qchem.perturbation.PerturbationSchedule` of these settings."""
        from mofdft_jax.qchem.perturbation import PerturbationSchedule

        return PerturbationSchedule(first_step=int(self.perturb_first_step),
                                    last_step=int(self.perturb_last_step),
                                    start_std=float(self.perturb_start_std),
                                    end_std=float(self.perturb_end_std))

    def uses_density_fit(self, natm: int) -> bool:
        """Whether the SCF of a molecule with ``natm`` atoms uses density fitting."""
        if self.density_fit == "auto":
            return natm > self.df_min_atoms
        return bool(self.density_fit)

    @property
    def density_basis_source(self) -> str:
        """Orbital basis of the reference molecule the density basis is generated from."""
        return PAPER_BASIS if self.aux_orbital_basis is None else self.aux_orbital_basis

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

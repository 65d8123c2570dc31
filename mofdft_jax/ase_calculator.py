"""ASE calculators: M-OFDFT energies and Hellmann–Feynman forces, and KS-DFT for comparison.

* :class:`MOFDFTCalculator` — one orbital-free density optimisation per geometry (spec §4): a
  classical kinetic functional (``tf``, ``tf+1/9vw``, ``tf+vw``, ``apbe`` with PBE XC) or a learned
  functional (a checkpoint of ``mofdft train``). The energy is the solver's reported energy, the
  forces are the Hellmann–Feynman plus nuclear-repulsion forces of the reported density (spec §4.6):

  .. math:: f_a = Z_a ∫ρ_p(r)\\frac{r − R_a}{|r − R_a|³}dr + Σ_{b≠a} Z_a Z_b
            \\frac{R_a − R_b}{|R_a − R_b|³}

  *Pulay-like terms are excluded*, as in the paper: the density basis is atom-centred and the
  grid (and, for a learned functional, the model's geometry input) move with the atoms, so
  ``forces`` is **not** exactly −dE/dR of ``energy``; it is the force the paper optimises
  geometries with (its PySCF-optimiser run, spec §4.6: ≤ 100 steps, 0.07 Å RMSD to KS). Use an
  optimiser that only reads forces (``ase.optimize.BFGS``, ``FIRE``), not a line search on the
  energy.

  **Warm start.** The density-basis functions are atom-centred and their integrals
  w_μ = ∫ω_μ do not depend on the geometry, so the coefficients of the previous geometry's
  solution are a valid density for the next one (wᵀp = N holds exactly). With
  ``warm_start=True`` (default) every calculation after the first starts from them (and runs
  ``warm_steps`` steps); the first one, or one with a different molecule, starts from ``init``.

  **Float64.** The calculator switches JAX to float64 itself when no JAX array exists yet
  (:func:`enable_x64_for_calculator`); otherwise call ``mofdft_jax.enable_x64()`` first.

  Units: ASE speaks eV and Å; inside, atomic units (``units.HARTREE_TO_EV``,
  ``units.BOHR_TO_ANGSTROM``).

* :class:`KSCalculator` — restricted KS-DFT with PySCF (:func:`mofdft_jax.qchem.ksdft.make_ks`,
  the label settings) and its analytic nuclear gradient (Pulay terms included): the reference of
  the geometry-optimisation comparison. The SCF of the next geometry starts from the previous
  density matrix.

Host code: it builds PySCF molecules and integral bundles; the solver itself is the device layer's
jitted :func:`mofdft_jax.solver.solve`. Grids are padded (blocks and significant functions) so that
geometries of one molecule share one compiled solver.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from mofdft_jax.units import BOHR_TO_ANGSTROM, HARTREE_TO_EV

#: Ha/Bohr → eV/Å.
HA_PER_BOHR_TO_EV_PER_ANGSTROM = HARTREE_TO_EV / BOHR_TO_ANGSTROM
#: Grids are padded to multiples of these many blocks / significant functions per block, so that
#: the grid of a moved geometry usually has the same shapes (no recompilation of the solver).
GRID_BLOCK_MULTIPLE = 16
GRID_FUNCTION_MULTIPLE = 64


def enable_x64_for_calculator() -> None:
    """Make JAX compute in float64 for :class:`MOFDFTCalculator`.

    ``jax_enable_x64`` can be switched on as long as no JAX array exists (arrays created in 32-bit
    mode would stay float32 next to float64 ones); so it is switched on here when JAX holds no
    live array, and otherwise a :class:`~mofdft_jax.config.Float64DisabledError` with a one-line
    hint is raised. Nothing happens when float64 is already on.
    """
    import jax

    from mofdft_jax.config import Float64DisabledError, enable_x64

    if jax.config.read("jax_enable_x64"):
        return
    live = jax.live_arrays()
    if live:
        raise Float64DisabledError(
            f"MOFDFTCalculator needs 64-bit JAX, and {len(live)} JAX array(s) already exist in "
            "32-bit mode: call mofdft_jax.enable_x64() (or set JAX_ENABLE_X64=1) before creating "
            "any JAX array")
    enable_x64()


def molecule_from_atoms(atoms, *, charge: int = 0, name: str | None = None):
    """The :class:`~mofdft_jax.molecules.Molecule` of an ASE ``Atoms`` (Å → Bohr)."""
    from mofdft_jax.molecules import Molecule

    return Molecule.from_angstrom(atoms.get_atomic_numbers(), atoms.get_positions(),
                                  charge=charge, name=name or atoms.get_chemical_formula())


def atoms_from_molecule(molecule):
    """An ASE ``Atoms`` of a :class:`~mofdft_jax.molecules.Molecule` (Bohr → Å)."""
    from ase import Atoms

    return Atoms(numbers=molecule.numbers, positions=molecule.coords_angstrom)


class MOFDFTCalculator(Calculator):
    """M-OFDFT energy and Hellmann–Feynman forces for ASE (see the module docstring).

    Args:
      functional: a classical kinetic functional name (``apbe``, ``tf+1/9vw`` …), a checkpoint
        stem/path of a learned functional, or a loaded
        :class:`~mofdft_jax.model.functional.LearnedFunctional` (then pass ``info`` too for its
        solver defaults).
      info: the checkpoint's :class:`~mofdft_jax.model.checkpoint.CheckpointInfo` (optional).
      basis: orbital basis of the initial guess (default: the checkpoint's label basis, else the
        paper's 6-31G(2df,p)); the density basis is always the paper's even-tempered basis.
      grid_level: grid of the kinetic/XC terms (default: the checkpoint's, else 2).
      xc: XC functional added to classical and ``ts_res`` functionals (default PBE).
      init: initial guess of a cold start (default:
        :func:`~mofdft_jax.commands.learned_solve.default_init`, ``projminao`` for learned and
        ``minao`` for classical functionals, spec §4.3; the same as ``mofdft solve``).
      steps: solver steps of a cold start (paper: 1000); ``warm_steps`` those of a warm start
        (default ``steps``).
      lr: step size (default with ``sgd``: the checkpoint's, 5e-4 for ethanol; 1e-3 for
        classical; with another optimiser its registry default).
      rule: reported step, ``iid``, ``ood`` (spec §4.5) or ``last`` (default: ``iid`` for
        ``sgd``, ``last`` otherwise).
      gtol: tolerance of the true convergence criterion (reported in ``solve_log``).
      optimizer: density optimiser, a name of :data:`mofdft_jax.solver.OPTIMIZERS` (default the
        paper's ``sgd``); ``stop_at_gtol`` as in :func:`mofdft_jax.solver.solve` (default: False
        for ``sgd``, True otherwise).
      warm_start: start from the previous geometry's coefficients.
      charge: molecular charge (0 for the paper's molecules).

    Attributes:
      coeffs: ``(naux,)`` reported density coefficients of the last calculation.
      last_result: the :class:`~mofdft_jax.solver.SolveResult` of the last calculation.
      last_bundle: its integral bundle (HF-force integrals included).
      solve_log: one dict per calculation (start kind, chosen step, status, wall times).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, functional="apbe", *, info=None, basis: str | None = None,
                 grid_level: int | None = None, xc: str | None = None, init: str | None = None,
                 steps: int = 1000, warm_steps: int | None = None, lr: float | None = None,
                 rule: str | None = None, gtol: float = 1e-4, warm_start: bool = True,
                 charge: int = 0, optimizer: str = "sgd", stop_at_gtol: bool | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        from mofdft_jax.commands.learned_solve import default_init
        from mofdft_jax.qchem.basis import PAPER_BASIS
        from mofdft_jax.solver import get_optimizer, resolve_solver_defaults

        enable_x64_for_calculator()
        self.optimizer = get_optimizer(optimizer).name
        self.learned, self.functional, self.info = _resolve_functional(functional, info)
        defaults = dict(self.info.extra.get("solver_defaults", {})) if self.info else {}
        self.basis = basis or defaults.get("basis") or PAPER_BASIS
        self.grid_level = int(grid_level if grid_level is not None
                              else defaults.get("grid_level", 2))
        self.xc = str(xc or defaults.get("xc", "pbe")).lower()
        self.init = init or default_init(self.learned)
        self.steps = int(steps)
        self.warm_steps = int(warm_steps if warm_steps is not None else steps)
        if lr is None and self.optimizer == "sgd":
            lr = defaults.get("lr", 1e-3)
        self.lr, self.rule, self.stop_at_gtol = resolve_solver_defaults(
            self.optimizer, lr=lr, rule=rule, stop_at_gtol=stop_at_gtol)
        self.gtol = float(gtol)
        self.warm_start = bool(warm_start)
        self.charge = int(charge)
        self.coeffs = None
        self.last_result = None
        self.last_bundle = None
        self.solve_log: list[dict] = []
        self._numbers = None
        self._energy_fn = None

    @property
    def needs_grid(self) -> bool:
        """Classical and ``ts_res`` functionals have grid terms; ``txc``/``tot`` do not."""
        return (not self.learned) or self.functional.target == "ts_res"

    @property
    def label(self) -> str:
        if self.learned:
            name = (self.info.extra.get("name") if self.info is not None else None) or "learned"
            return f"M-OFDFT {name}[{self.functional.target}]"
        return f"{self.functional}+{self.xc}"

    def _get_energy_fn(self):
        if self._energy_fn is None:
            if self.learned:
                from mofdft_jax.commands.learned_solve import learned_energy_fn

                self._energy_fn = learned_energy_fn(self.functional, self.xc)
            else:
                from mofdft_jax.solver import make_energy_fn

                self._energy_fn = make_energy_fn(self.functional, xc=self.xc)[0]
        return self._energy_fn

    def forget_density(self) -> None:
        """Drop the warm-start density and the cached results: the next calculation starts from
        ``init``."""
        self.coeffs = None
        self._numbers = None
        self.reset()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        from mofdft_jax.commands.solve import PYSCF_XC
        from mofdft_jax.qchem.basis import make_auxmol, make_mol
        from mofdft_jax.qchem.guesses import initial_guess
        from mofdft_jax.qchem.integrals import build_integral_bundle
        from mofdft_jax.qchem.settings import PAPER_SETTINGS
        from mofdft_jax.solver import get_optimizer, hf_forces, solve

        t0 = time.perf_counter()
        molecule = molecule_from_atoms(self.atoms, charge=self.charge)
        mol = make_mol(molecule, self.basis)
        auxmol = make_auxmol(mol)
        if self.learned:
            self.functional.check_elements(mol.atom_charges())
        bundle = build_integral_bundle(
            mol, auxmol, grid_level=self.grid_level if self.needs_grid else None,
            with_forces=True,
            with_overlap=(self.learned and self.functional.use_reparam)
            or get_optimizer(self.optimizer).uses_metric,
            grid_padding=(GRID_BLOCK_MULTIPLE, GRID_FUNCTION_MULTIPLE))
        geometry = self.functional.prepare(bundle) if self.learned else None
        warm = (self.warm_start and self.coeffs is not None and self._numbers is not None
                and np.array_equal(self._numbers, molecule.numbers))
        if warm:
            p0, steps, start = self.coeffs, self.warm_steps, "warm"
        else:
            settings = PAPER_SETTINGS.replace(basis=self.basis, grid_level=self.grid_level,
                                              xc=PYSCF_XC.get(self.xc, self.xc))
            options = ({"functional": self.functional, "bundle": bundle, "geometry": geometry}
                       if self.learned else {})
            p0 = initial_guess(self.init, mol, auxmol, settings=settings, **options).coeffs
            steps, start = self.steps, self.init
        if self.learned:
            from mofdft_jax.solver.learned import make_learned_inputs

            inputs = make_learned_inputs(self.functional, bundle, geometry)
        else:
            inputs = bundle
        t1 = time.perf_counter()
        result = solve(self._get_energy_fn(), p0, inputs, steps=steps, lr=self.lr, gtol=self.gtol,
                       rule=self.rule, optimizer=self.optimizer, stop_at_gtol=self.stop_at_gtol)
        t2 = time.perf_counter()
        forces = np.asarray(hf_forces(result.coeffs, bundle))
        self.coeffs = np.asarray(result.coeffs)
        self._numbers = molecule.numbers.copy()
        self.last_result, self.last_bundle = result, bundle
        energy_ev = float(result.energy) * HARTREE_TO_EV
        self.results = {"energy": energy_ev, "free_energy": energy_ev,
                        "forces": forces * HA_PER_BOHR_TO_EV_PER_ANGSTROM}
        self.solve_log.append({"start": start, "steps": int(steps),
                               "optimizer": self.optimizer, "n_steps": int(result.n_steps),
                               "converged_step": result.converged_step,
                               "chosen_step": int(result.chosen_step), "status": result.status,
                               "energy_ha": float(result.energy),
                               "proj_grad_norm": float(result.proj_grad_norm),
                               "max_force_ha_per_bohr": float(np.abs(forces).max()),
                               "setup_wall_s": t1 - t0, "solve_wall_s": t2 - t1})


def _resolve_functional(functional, info):
    """``(learned?, functional, info)`` from a kinetic name, checkpoint path or loaded model."""
    from mofdft_jax.functionals import KINETIC_FUNCTIONALS

    if isinstance(functional, (str, Path)):
        if str(functional).lower() in KINETIC_FUNCTIONALS:
            return False, str(functional).lower(), None
        from mofdft_jax.commands.learned_solve import load_functional

        loaded, loaded_info = load_functional(functional)
        return True, loaded, info or loaded_info
    if hasattr(functional, "energy") and hasattr(functional, "prepare"):
        return True, functional, info
    raise ValueError(f"functional must be a kinetic functional name "
                     f"({', '.join(KINETIC_FUNCTIONALS)}), a checkpoint or a LearnedFunctional; "
                     f"got {functional!r}")


class KSCalculator(Calculator):
    """Restricted KS-DFT (PySCF) energy and analytic forces for ASE (see the module docstring).

    Args:
      settings: :class:`~mofdft_jax.qchem.settings.LabelSettings` (basis, XC, grid level, density
        fitting …); ``conv_tol`` default here 1e-9 Ha (tighter than the labels' 1 meV: optimised
        geometries need converged gradients).
      warm_start: start each SCF from the previous geometry's density matrix.
      grid_response: include the response of the moving grid in the gradient (PySCF's
        ``grid_response``), so that the forces are −dE/dR of the energy of the same grid.

    Attributes:
      scf_log: one dict per calculation (energy, SCF convergence, wall time).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, settings=None, *, conv_tol: float = 1e-9, warm_start: bool = True,
                 grid_response: bool = True, charge: int = 0, **kwargs):
        super().__init__(**kwargs)
        from mofdft_jax.qchem.settings import PAPER_SETTINGS

        base = settings if settings is not None else PAPER_SETTINGS
        self.settings = base.replace(conv_tol=conv_tol)
        self.warm_start = bool(warm_start)
        self.grid_response = bool(grid_response)
        self.charge = int(charge)
        self.scf_log: list[dict] = []
        self._dm = None
        self._numbers = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        from mofdft_jax.molecules import InputError
        from mofdft_jax.qchem.basis import make_mol
        from mofdft_jax.qchem.ksdft import make_ks, to_numpy

        t0 = time.perf_counter()
        molecule = molecule_from_atoms(self.atoms, charge=self.charge)
        mol = make_mol(molecule, self.settings.basis, max_memory_mb=self.settings.max_memory_mb)
        mf = make_ks(mol, self.settings)
        mf.verbose = 0
        warm = (self.warm_start and self._dm is not None
                and np.array_equal(self._numbers, molecule.numbers))
        energy = float(mf.kernel(dm0=self._dm if warm else None))
        if not mf.converged:
            raise InputError(f"{molecule.name}: KS-DFT did not converge in "
                             f"{self.settings.max_cycle} cycles")
        grad = mf.nuc_grad_method()
        grad.grid_response = self.grid_response
        gradient = to_numpy(grad.kernel())
        self._dm = to_numpy(mf.make_rdm1())
        self._numbers = molecule.numbers.copy()
        self.results = {"energy": energy * HARTREE_TO_EV, "free_energy": energy * HARTREE_TO_EV,
                        "forces": -gradient * HA_PER_BOHR_TO_EV_PER_ANGSTROM}
        self.scf_log.append({"energy_ha": energy, "warm": bool(warm),
                             "max_force_ha_per_bohr": float(np.abs(gradient).max()),
                             "wall_s": time.perf_counter() - t0})


__all__ = ["GRID_BLOCK_MULTIPLE", "GRID_FUNCTION_MULTIPLE", "HA_PER_BOHR_TO_EV_PER_ANGSTROM",
           "KSCalculator", "MOFDFTCalculator", "atoms_from_molecule", "enable_x64_for_calculator",
           "molecule_from_atoms"]

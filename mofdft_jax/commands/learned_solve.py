"""Orbital-free DFT with a learned functional: ``mofdft solve --functional CHECKPOINT`` and the
held-out evaluation of a checkpoint (spec §3.4, §4.3–§4.6, §5.1).

* :func:`solve_molecule_learned` — one molecule: integrals (with the density-basis overlap for the
  natural reparametrisation, and a grid only for ``ts_res``), the adapter geometry, the initial
  guess (``projminao``: MINAO + the Δp head), the projected-gradient solver on the energy of
  :func:`mofdft_jax.solver.learned.make_learned_energy_fn`, Hellmann–Feynman forces; returns the same
  summary as ``mofdft solve`` with a classical functional plus the target and the checkpoint's data
  fingerprint.
* :func:`evaluate_on_dataset` — the quality measurement of the paper (spec §5.1): for held-out
  molecules of a dataset, the energy at the reported step against the KS total energy and the HF
  force against the HF force of the fitted KS density p* (same orbital basis and grid as the labels),
  as mean absolute errors in kcal/mol and kcal/mol/Å.

A checkpoint written by ``mofdft train`` stores ``extra.solver_defaults`` (orbital basis and grid
level of its labels, XC functional, the solver step size: 5·10⁻⁴ for ethanol as in the paper's
scripts, spec §4.4); they are used unless overridden.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

#: The initial density of a learned functional in every entry point (``mofdft solve`` with a
#: checkpoint, the ASE calculator, the held-out evaluation, ``prepare_learned_molecule``):
#: ProjMINAO, the MINAO density plus the model's Δp (spec §4.3, the paper's choice).
DEFAULT_LEARNED_INIT = "projminao"
#: The initial density of a classical functional: MINAO (ProjMINAO needs a model).
DEFAULT_CLASSICAL_INIT = "minao"


def default_init(learned: bool) -> str:
    """The default initial density: :data:`DEFAULT_LEARNED_INIT` for a learned functional, else
    :data:`DEFAULT_CLASSICAL_INIT`."""
    return DEFAULT_LEARNED_INIT if learned else DEFAULT_CLASSICAL_INIT


#: Grids are padded to a multiple of this many blocks, so that conformers of one molecule (whose
#: grids differ by a few blocks) share one compiled solver.
EVAL_GRID_BLOCK_MULTIPLE = 16


def is_checkpoint(value) -> bool:
    """Whether ``value`` names a learned-functional checkpoint (its ``STEM.json`` exists)."""
    from mofdft_jax.model.checkpoint import checkpoint_paths

    return isinstance(value, (str, Path)) and checkpoint_paths(value)[1].is_file()


def load_functional(path):
    """``(LearnedFunctional, CheckpointInfo)`` of a checkpoint; a bad checkpoint is an
    :class:`~mofdft_jax.molecules.InputError` (one line, exit status 2 in the CLI)."""
    from mofdft_jax.model.checkpoint import CheckpointError, load_checkpoint
    from mofdft_jax.molecules import InputError

    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        raise InputError(str(exc)) from None


_ENERGY_FNS: dict = {}


def learned_energy_fn(functional, xc: str, negative_density_penalty: float = 0.0):
    """:func:`~mofdft_jax.solver.learned.make_learned_energy_fn`, one function object per
    (functional, xc, penalty) in this process, so the jitted solver is reused across molecules.

    With ``negative_density_penalty`` c > 0 the term ``negative_density`` =
    c · Σ_g w_g max(−ρ, 0) (the paper's optional penalty, SI B.5.1) is added (grid needed)."""
    from mofdft_jax.solver.energy import integrated_negative_density
    from mofdft_jax.solver.learned import make_learned_energy_fn

    key = (id(functional), xc, float(negative_density_penalty))
    if key not in _ENERGY_FNS:
        base = make_learned_energy_fn(functional, xc=xc)
        if negative_density_penalty > 0:
            c = float(negative_density_penalty)

            def energy_terms_fn(coeffs, inputs):
                terms = base(coeffs, inputs)
                nuclear = terms.pop("nuclear", None)
                terms["negative_density"] = c * integrated_negative_density(coeffs,
                                                                            inputs.bundle)
                if nuclear is not None:
                    terms["nuclear"] = nuclear
                return terms
        else:
            energy_terms_fn = base
        _ENERGY_FNS[key] = (functional, energy_terms_fn)
    return _ENERGY_FNS[key][1]


def solver_defaults(info) -> dict:
    """Orbital basis, grid level, XC and step size stored with a checkpoint (may be empty)."""
    return dict(info.extra.get("solver_defaults", {})) if info is not None else {}


def label_settings_mismatch(defaults: dict, *, basis=None, grid_level=None, xc=None) -> list:
    """One line per setting the user asked for that differs from the checkpoint's label settings
    (orbital basis, grid level, XC): the functional was trained on labels of those settings, and
    its accuracy is only defined against KS at them."""
    notes = []
    for key, asked in (("basis", basis), ("grid_level", grid_level), ("xc", xc)):
        stored = defaults.get(key)
        if asked is None or stored is None:
            continue
        same = (str(asked).lower() == str(stored).lower()) if key != "grid_level" else \
            int(asked) == int(stored)
        if not same:
            notes.append(f"{key} {asked} differs from the checkpoint's label setting {stored}")
    return notes


class LearnedSetup(NamedTuple):
    """One molecule prepared for a learned functional (:func:`prepare_learned_molecule`)."""

    mol: object          # PySCF orbital-basis Mole
    auxmol: object       # PySCF density-basis Mole
    bundle: object       # IntegralBundle
    inputs: object       # LearnedInputs (bundle + adapter geometry + features)
    guess: object        # InitialGuess (coefficients of ``init``)
    with_forces: bool    # whether the bundle has the force integrals


def prepare_learned_molecule(molecule, functional, *, basis: str, grid_level: int, xc: str,
                             init: str = DEFAULT_LEARNED_INIT, with_forces: bool | None = None,
                             pad_grid_blocks: int = 1, grid_dtype: str = "float64",
                             with_metric: bool = False, on_stage=None, console=None,
                             max_memory_gib: float | None = None,
                             extra_memory: dict | None = None) -> LearnedSetup:
    """Integrals, adapter geometry, learned inputs and the initial guess of one molecule: the
    set-up shared by :func:`solve_molecule_learned`, ``mofdft diagnose`` and the visited-density
    sampler (one path, built once per molecule).

    The grid is built only for ``ts_res`` (T_APBE needs it); the density-basis overlap when the
    functional reparametrises or the optimiser uses a metric (``with_metric``); the force
    integrals when ``with_forces`` (``None``: when they fit
    :data:`~mofdft_jax.commands.solve.MAX_FORCE_INTEGRALS_BYTES`). ``on_stage(text)`` reports
    progress. Unseen elements are an :class:`~mofdft_jax.molecules.InputError`. Before the
    integrals the memory is estimated (``extra_memory``: more named parts, bytes), printed on
    ``console`` and refused above ``max_memory_gib``
    (:func:`~mofdft_jax.commands.solve.report_memory_estimate`).
    """
    from mofdft_jax.commands.solve import (MAX_FORCE_INTEGRALS_BYTES, PYSCF_XC,
                                           report_memory_estimate)
    from mofdft_jax.qchem.estimate import estimate_solve_memory
    from mofdft_jax.model.functional import UnseenElementError
    from mofdft_jax.molecules import InputError
    from mofdft_jax.qchem.basis import make_auxmol, make_mol
    from mofdft_jax.qchem.guesses import initial_guess
    from mofdft_jax.qchem.integrals import build_integral_bundle
    from mofdft_jax.qchem.settings import PAPER_SETTINGS
    from mofdft_jax.solver.learned import make_learned_inputs

    stage = on_stage or (lambda text: None)
    stage(f"{molecule.name}: integrals")
    mol = make_mol(molecule, basis)
    try:
        functional.check_elements(mol.atom_charges())
    except UnseenElementError as exc:
        raise InputError(f"{molecule.name}: {exc}") from None
    auxmol = make_auxmol(mol)
    if with_forces is None:
        with_forces = mol.natm * 3 * auxmol.nao_nr() * 8 <= MAX_FORCE_INTEGRALS_BYTES
    needs_grid = functional.target == "ts_res"
    with_overlap = functional.use_reparam or with_metric
    report_memory_estimate(
        estimate_solve_memory(mol, auxmol, grid_level=grid_level if needs_grid else None,
                              grid_dtype=grid_dtype, with_overlap=with_overlap,
                              with_forces=with_forces, name=molecule.name, extra=extra_memory),
        console, max_memory_gib)
    bundle = build_integral_bundle(mol, auxmol, grid_level=grid_level if needs_grid else None,
                                   with_forces=with_forces,
                                   with_overlap=with_overlap,
                                   grid_padding=(pad_grid_blocks, 1), grid_dtype=grid_dtype)
    geometry = functional.prepare(bundle)
    stage(f"{molecule.name}: initial guess ({init})")
    settings = PAPER_SETTINGS.replace(basis=basis, grid_level=grid_level,
                                      xc=PYSCF_XC.get(xc, xc))
    guess = initial_guess(init, mol, auxmol, settings=settings, functional=functional,
                          bundle=bundle, geometry=geometry)
    return LearnedSetup(mol=mol, auxmol=auxmol, bundle=bundle,
                        inputs=make_learned_inputs(functional, bundle, geometry), guess=guess,
                        with_forces=bool(with_forces))


def solve_molecule_learned(molecule, functional, info=None, *, init: str = DEFAULT_LEARNED_INIT,
                           steps: int = 1000, lr: float | None = None, xc: str | None = None,
                           rule: str = "iid", gtol: float = 1e-4, basis: str | None = None,
                           grid_level: int | None = None, trajectory: Path | None = None,
                           cube: Path | None = None, console=None,
                           pad_grid_blocks: int = 1,
                           grid_dtype: str = "float64", optimizer: str = "sgd",
                           stop_at_gtol: bool | None = None,
                           negative_density_penalty: float = 0.0, store_coeffs: bool = False,
                           setup: "LearnedSetup | None" = None,
                           max_memory_gib: float | None = None) -> tuple[dict, object]:
    """Optimise the density of ``molecule`` with a learned functional (see module docstring).

    Args:
      molecule: a :class:`~mofdft_jax.molecules.Molecule`.
      functional, info: from :func:`load_functional`.
      init: initial guess name (``projminao`` by default, the paper's choice).
      lr, xc, basis, grid_level: ``None`` takes the checkpoint's defaults (then 1e-3, PBE, the
        paper's basis, grid level 2).
      pad_grid_blocks: pad the grid to a multiple of this many blocks.
      grid_dtype: storage type of the grid's basis values (``ts_res`` only): ``"float64"`` or the
        explicit ``"float32"`` option (:func:`~mofdft_jax.qchem.integrals.build_integral_bundle`).
      optimizer, stop_at_gtol: as in :func:`mofdft_jax.solver.solve`; with ``sgd`` the
        checkpoint's step size is the default, otherwise the optimiser's own (a step size tuned
        for SGD means nothing to L-BFGS).
      negative_density_penalty: the paper's optional penalty (``ts_res`` only: it needs the grid).
      store_coeffs: keep the ``(n, naux)`` coefficient trajectory in the result.
      setup: the molecule already prepared by :func:`prepare_learned_molecule` with the same
        basis, grid level, XC and ``init`` (it is then not rebuilt).
      max_memory_gib: refuse the molecule when its memory estimate exceeds this (default: the
        machine's memory; :func:`prepare_learned_molecule`).

    Returns:
      ``(summary dict, SolveResult)``; the summary has the keys of ``mofdft solve``.
    """
    from mofdft_jax.config import ensure_x64
    from mofdft_jax.molecules import InputError
    from mofdft_jax.qchem.basis import PAPER_BASIS
    from mofdft_jax.commands.solve import (make_progress, make_progress_callback, solver_summary,
                                           trajectory_buffer_bytes)
    from mofdft_jax.solver import get_optimizer, resolve_solver_defaults, solve

    ensure_x64()
    t_start = time.perf_counter()
    defaults = solver_defaults(info)
    label_notes = label_settings_mismatch(defaults, basis=basis, grid_level=grid_level, xc=xc)
    basis = basis or defaults.get("basis") or PAPER_BASIS
    grid_level = grid_level if grid_level is not None else defaults.get("grid_level", 2)
    xc = xc or defaults.get("xc", "pbe")
    if console is not None and label_notes:
        console.print(f"[bold yellow]warning:[/] {molecule.name}: {'; '.join(label_notes)}",
                      highlight=False)
    elif console is not None:
        source = ("the checkpoint's label settings" if defaults
                  else "defaults (the checkpoint stores no label settings)")
        console.print(f"{molecule.name}: {basis} / grid level {grid_level} / {xc.upper()} from "
                      f"{source}", highlight=False)
    spec = get_optimizer(optimizer)
    if lr is None and optimizer == "sgd":
        lr = defaults.get("lr", 1e-3)
    lr, rule, stop_at_gtol = resolve_solver_defaults(optimizer, lr=lr, rule=rule,
                                                     stop_at_gtol=stop_at_gtol)
    name = (info.extra.get("name") if info is not None else None) or "learned"
    label = f"{name}[{functional.target}]"
    needs_grid = functional.target == "ts_res"
    if negative_density_penalty > 0 and not needs_grid:
        raise InputError(f"the negative-density penalty needs a grid; the {functional.target} "
                         "functional has none")

    progress = make_progress(console)
    with progress:
        stage = progress.add_task(f"{molecule.name}: integrals", total=None, info="")
        if setup is None:
            setup = prepare_learned_molecule(
                molecule, functional, basis=basis, grid_level=grid_level, xc=xc, init=init,
                pad_grid_blocks=pad_grid_blocks, grid_dtype=grid_dtype,
                with_metric=spec.uses_metric,
                on_stage=lambda text: progress.update(stage, description=text),
                console=progress.console, max_memory_gib=max_memory_gib,
                extra_memory={"trajectory": trajectory_buffer_bytes(steps)})
        progress.update(stage, visible=False)
        mol, auxmol, bundle, guess = setup.mol, setup.auxmol, setup.bundle, setup.guess
        natm, naux, with_forces = mol.natm, auxmol.nao_nr(), setup.with_forces
        t_setup = time.perf_counter() - t_start

        energy_terms_fn = learned_energy_fn(functional, xc, negative_density_penalty)
        inputs = setup.inputs
        on_progress, task = make_progress_callback(
            progress, f"{molecule.name}: {label} {optimizer}", steps)

        t_solve0 = time.perf_counter()
        result = solve(energy_terms_fn, guess.coeffs, inputs, steps=steps, lr=lr, gtol=gtol,
                       rule=rule, optimizer=optimizer, stop_at_gtol=stop_at_gtol,
                       progress=on_progress, store_coeffs=store_coeffs)
        solve_wall_s = time.perf_counter() - t_solve0
        progress.update(task, completed=steps + 1)

    from mofdft_jax.commands.solve import finish_solution

    forces = finish_solution(result, bundle, mol, auxmol, with_forces=with_forces,
                             trajectory=trajectory, cube=cube, label=f"{molecule.name} {label}")
    norm = np.asarray(bundle.norm)
    summary = {
        "molecule": molecule.name,
        "formula": molecule.formula,
        "charge": int(molecule.charge),
        "n_atoms": natm,
        "n_electrons": float(mol.nelectron),
        "naux": naux,
        "n_grid_points": (int(np.count_nonzero(np.asarray(bundle.grid.weights)))
                          if bundle.grid is not None else 0),
        "functional": label,
        "target": functional.target,
        "checkpoint_fingerprint": info.data_fingerprint if info is not None else "",
        "xc": xc,
        "init": init,
        "basis": basis,
        "grid_level": grid_level if needs_grid else None,
        "grid_dtype": grid_dtype if needs_grid else None,
        "lr": lr,
        "steps": steps,
        "rule": rule,
        **solver_summary(result),
        "label_settings_warnings": label_notes,
        "negative_density_penalty": negative_density_penalty,
        "energy_total_ha": result.energy,
        "terms": result.terms,
        "forces_ha_per_bohr": forces.tolist(),
        "n_steps": result.n_steps,
        "chosen_step": result.chosen_step,
        "ood_criterion": result.ood_criterion if rule == "ood" else None,
        "steps_iid": result.steps_iid,
        "steps_ood": result.steps_ood,
        "converged_step": result.converged_step,
        "gtol": gtol,
        "proj_grad_norm": result.proj_grad_norm,
        "proj_grad_norm_final": float(result.trajectory.proj_grad_norm[-1]),
        "energy_final_ha": result.energy_final,
        "energy_initial_ha": float(result.trajectory.energy[0]),
        "electron_count": float(norm @ result.coeffs),
        "status": result.status,
        "message": result.message,
        "initial_guess": {"name": guess.name, "fitted_electrons": guess.fitted_electrons,
                          "wall_s": guess.wall_s},
        "ks_reference": guess.reference or None,
        "setup_wall_s": t_setup,
        "solve_wall_s": solve_wall_s,
        "wall_s": time.perf_counter() - t_start,
    }
    return summary, result


def run_solve_learned(file: str, checkpoint, *, index: int = 0, charge: int | None = None,
                      **options):
    """``mofdft solve FILE --functional CHECKPOINT``: read molecule ``index`` of ``file`` (total
    charge ``charge`` if given, :func:`~mofdft_jax.commands.solve.read_cli_molecule`), load the
    checkpoint and run :func:`solve_molecule_learned` with ``options``."""
    from mofdft_jax.commands.solve import read_cli_molecule

    molecule = read_cli_molecule(file, index, charge)
    functional, info = load_functional(checkpoint)
    return solve_molecule_learned(molecule, functional, info, **options)


def evaluate_on_dataset(functional, info, dataset_dir, files, *, init: str = DEFAULT_LEARNED_INIT,
                        steps: int = 1000, lr: float | None = None, rule: str = "iid",
                        console=None, on_molecule=None) -> dict:
    """Held-out quality of a learned functional (spec §5.1): OFDFT from ``init`` on each molecule of
    ``files`` in ``dataset_dir`` with the dataset's orbital basis and grid level.

    Per molecule: |E_OFDFT − E_KS| (reported step, total energies, kcal/mol) and the mean |ΔF| over
    all Cartesian components of the Hellmann–Feynman forces against those of the fitted KS density
    p* (kcal/mol/Å); also the energy error of the initial density (state 0 of the solver).

    Returns:
      ``{"molecules": [row per molecule], "energy_mae_kcal", "force_mae_kcal_per_angstrom",
      "initial_energy_mae_kcal", "n", ...}``.
    """
    from mofdft_jax.data.loader import open_dataset
    from mofdft_jax.units import HA_PER_BOHR_TO_KCAL_PER_ANGSTROM, HARTREE_TO_KCAL

    dataset = open_dataset(dataset_dir)
    settings = dataset.label_settings
    rows = []
    t0 = time.perf_counter()
    for file in files:
        labels = dataset.read(file)
        summary, result = solve_molecule_learned(
            labels.molecule, functional, info, init=init, steps=steps, lr=lr, rule=rule,
            xc=settings.get("xc", "pbe").lower(), basis=settings["basis"],
            grid_level=int(settings["grid_level"]), console=console,
            pad_grid_blocks=EVAL_GRID_BLOCK_MULTIPLE)
        e_ks = float(labels.ks_energy["e_tot"])
        forces = np.asarray(summary["forces_ha_per_bohr"])
        row = {"file": file, "molecule": labels.molecule.name,
               "energy_ha": summary["energy_total_ha"], "energy_ks_ha": e_ks,
               "energy_error_kcal": (summary["energy_total_ha"] - e_ks) * HARTREE_TO_KCAL,
               "initial_energy_error_kcal": (summary["energy_initial_ha"] - e_ks)
               * HARTREE_TO_KCAL,
               "force_mae_kcal_per_angstrom": float(np.mean(np.abs(
                   forces - np.asarray(labels.hf_forces_ref)))) * HA_PER_BOHR_TO_KCAL_PER_ANGSTROM,
               "chosen_step": summary["chosen_step"], "status": summary["status"],
               "proj_grad_norm": summary["proj_grad_norm"], "solve_wall_s": summary["solve_wall_s"]}
        rows.append(row)
        if on_molecule is not None:
            on_molecule(row)
    energy_err = np.array([r["energy_error_kcal"] for r in rows])
    return {
        "n": len(rows),
        "init": init,
        "steps": steps,
        "rule": rule,
        "energy_mae_kcal": float(np.mean(np.abs(energy_err))) if rows else float("nan"),
        "energy_mean_error_kcal": float(np.mean(energy_err)) if rows else float("nan"),
        "force_mae_kcal_per_angstrom": float(np.mean([r["force_mae_kcal_per_angstrom"]
                                                      for r in rows])) if rows else float("nan"),
        "initial_energy_mae_kcal": float(np.mean([abs(r["initial_energy_error_kcal"])
                                                  for r in rows])) if rows else float("nan"),
        "wall_s": time.perf_counter() - t0,
        "molecules": rows,
    }

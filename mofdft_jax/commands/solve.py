"""``mofdft solve``: orbital-free density optimisation of one molecule (spec §4)."""

from __future__ import annotations

import csv
import functools
import time
from pathlib import Path

import typer

from mofdft_jax.commands.output import echo_json

#: PySCF names of the XC functionals that match ours exactly (functionals/xc.py: Slater + PW92).
PYSCF_XC = {"pbe": "pbe", "lda": "lda,pw"}
#: Per-state float64 series of the solver's trajectory buffers counted by
#: :func:`trajectory_buffer_bytes`: energy, |grad E|, |P grad E|, electron count and up to six
#: energy terms (kinetic, Hartree, XC, external, nuclear, negative-density penalty).
TRAJECTORY_SERIES = 10
#: Copies of the trajectory alive at once: the compiled buffers and the host copy of the result.
TRAJECTORY_COPIES = 2
#: Above this size the (natm, 3, naux) Hellmann–Feynman integrals are not stored in the bundle and
#: the forces take the blocked host route.
MAX_FORCE_INTEGRALS_BYTES = 256e6


def _optimizer_help() -> str:
    from mofdft_jax.solver.optimizers import optimizer_help

    return optimizer_help()


# Option checks shared by ``mofdft solve`` and ``mofdft ks``: a bad value is a click usage error
# (one line ``Error: Invalid value for '--name': ...``, exit status 2) raised before any work.

def check_choice(name: str, value: str, allowed) -> str:
    """``value`` if it is one of ``allowed`` (the keys of a registry), else a usage error listing
    them."""
    if value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}",
                                 param_hint=f"'{name}'")
    return value


_choices = check_choice


def check_basis_option(name: str, value):
    """``value`` (``None`` passes) if PySCF knows that orbital basis for H, C, N, O and F
    (:func:`mofdft_jax.qchem.basis.check_basis`), else a usage error naming examples."""
    if value is None:
        return value
    from mofdft_jax.molecules import InputError
    from mofdft_jax.qchem.basis import check_basis

    try:
        return check_basis(value)
    except InputError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"'{name}'") from None


def check_grid_level_option(name: str, value):
    """``value`` (``None`` passes) if it is one of PySCF's grid levels
    (:data:`mofdft_jax.qchem.grids.GRID_LEVELS`), else a usage error naming them."""
    from mofdft_jax.qchem.grids import GRID_LEVELS

    if value is not None and value not in GRID_LEVELS:
        raise typer.BadParameter(f"{value} is not a PySCF grid level ({GRID_LEVELS[0]} to "
                                 f"{GRID_LEVELS[-1]})", param_hint=f"'{name}'")
    return value


def check_checkpoint_path(value: str, classical=()) -> None:
    """A ``--functional`` value that is not a classical name but reads as a path (a directory
    part, a ``.eqx`` / ``.json`` suffix, or an existing weights file) and names no checkpoint is
    an :class:`~mofdft_jax.molecules.InputError` ``no such checkpoint: VALUE`` (one line,
    exit status 2)."""
    import os

    from mofdft_jax.model.checkpoint import checkpoint_paths
    from mofdft_jax.molecules import InputError

    if value in classical:
        return
    path = Path(value).expanduser()
    weights, metadata = checkpoint_paths(path)
    if weights.is_file() and not metadata.is_file():
        raise InputError(f"no such checkpoint: {value} (its metadata {metadata} is missing; "
                         "mofdft train writes STEM.eqx and STEM.json)")
    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    if any(sep in value for sep in seps) or path.suffix in (".eqx", ".json") \
            or value.startswith("~"):
        raise InputError(f"no such checkpoint: {value}")


def check_output_path(name: str, path) -> None:
    """An output file ``path`` of option ``name`` (``None`` passes) must be writable before any
    work is done: its directory exists and is writable, and the path is not a directory. Else an
    :class:`~mofdft_jax.molecules.InputError` (one line, exit status 2)."""
    import os

    from mofdft_jax.molecules import InputError

    if path is None:
        return
    path = Path(path).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"{name} {path}: is a directory (give a file name)")
    if not parent.is_dir():
        raise InputError(f"{name} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{name} {path}: directory {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{name} {path}: file is not writable")


def machine_memory_bytes() -> int:
    """Memory this process may use: the physical memory, or the cgroup limit when lower."""
    import os

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max",
                       "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return int(total)


def trajectory_buffer_bytes(steps: int) -> int:
    """Bytes of the solver's trajectory for ``steps`` updates: its compiled buffers hold
    :func:`~mofdft_jax.solver.optimize.trajectory_capacity` states (the next power of two
    ≥ steps + 1) of :data:`TRAJECTORY_SERIES` float64 series, :data:`TRAJECTORY_COPIES` times
    (device buffers and the host result); the coefficients are not stored by ``mofdft solve``."""
    from mofdft_jax.solver.optimize import trajectory_capacity

    return trajectory_capacity(int(steps)) * TRAJECTORY_SERIES * 8 * TRAJECTORY_COPIES


def _gib(n_bytes: float) -> str:
    """``n_bytes`` in MiB, GiB or TiB (:func:`mofdft_jax.qchem.estimate.format_bytes`)."""
    from mofdft_jax.qchem.estimate import format_bytes

    return format_bytes(n_bytes)


def memory_limit(max_memory_gib: float | None = None) -> tuple[float, str]:
    """``(bytes, what it is)`` of the up-front size checks: ``--max-memory`` GiB when given, else
    :func:`machine_memory_bytes`."""
    if max_memory_gib is None:
        return machine_memory_bytes(), "this machine's memory"
    return max_memory_gib * 2**30, "--max-memory"


def check_steps_memory(steps: int, max_memory_gib: float | None = None) -> int:
    """Refuse (:class:`~mofdft_jax.molecules.InputError`, exit status 2) a ``--steps`` whose
    trajectory buffers (:func:`trajectory_buffer_bytes`) exceed ``max_memory_gib`` (default:
    :func:`machine_memory_bytes`), before any work; returns the estimate in bytes."""
    from mofdft_jax.molecules import InputError
    from mofdft_jax.solver.optimize import trajectory_capacity

    need = trajectory_buffer_bytes(steps)
    limit, source = memory_limit(max_memory_gib)
    if need > limit:
        states = trajectory_capacity(int(steps))
        raise InputError(f"--steps {steps}: the trajectory buffers alone need ~{_gib(need)} "
                         f"({states} states x {TRAJECTORY_SERIES} float64 series x "
                         f"{TRAJECTORY_COPIES} copies), more than the {_gib(limit)} of {source}; "
                         "use fewer steps")
    return need


def check_memory_estimate(estimate, max_memory_gib: float | None = None) -> None:
    """Refuse (:class:`~mofdft_jax.molecules.InputError`, exit status 2) a job whose
    :class:`~mofdft_jax.qchem.estimate.MemoryEstimate` exceeds ``max_memory_gib`` (default:
    :func:`machine_memory_bytes`), before its integrals are computed."""
    from mofdft_jax.molecules import InputError

    limit, source = memory_limit(max_memory_gib)
    if estimate.total_bytes > limit:
        raise InputError(f"{estimate.describe()}: more than the {_gib(limit)} of {source}; give "
                         "--max-memory GIB to run it anyway, or a smaller molecule, a lower "
                         "--grid-level or (solve) --grid-dtype float32")


def report_memory_estimate(estimate, console=None, max_memory_gib: float | None = None) -> None:
    """Print ``estimate`` (one plain line on ``console``, if any) and refuse it when too large
    (:func:`check_memory_estimate`)."""
    check_memory_estimate(estimate, max_memory_gib)
    if console is not None:
        console.print(estimate.describe(), highlight=False, soft_wrap=True, markup=False)


def check_positive(name: str, value):
    """``value`` (``None`` passes) if it is a finite number > 0, else a usage error."""
    import math

    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a positive number (got {value:g})",
                                 param_hint=f"'{name}'")
    return value


def solve_command(
    file: str = typer.Argument(..., help="Molecule file (.xyz, .pdb, .npz, .smi) or "
                               "smiles:<SMILES>."),
    functional: str = typer.Option("apbe", "--functional", help="Kinetic functional: tf, vw, "
                                   "tf+1/9vw, tf+vw, apbe, or a learned-functional checkpoint "
                                   "(mofdft train --out STEM: STEM, STEM.json or STEM.eqx)."),
    init: str = typer.Option(None, "--init", help="Initial density: minao, huckel, fastminao, "
                             "ks (the fitted KS reference density) or projminao (MINAO + the "
                             "learned Δp; needs a checkpoint). Default: projminao with a "
                             "checkpoint (as the ASE calculator), minao with a classical "
                             "functional."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="Density optimiser: "
                                  + _optimizer_help() + "."),
    steps: int = typer.Option(1000, "--max-steps", "--steps", min=0, help="Maximum number of "
                              "optimiser steps (paper: 1000, all run with sgd); 0 evaluates the "
                              "initial density."),
    lr: float = typer.Option(None, "--lr", min=0.0, help="Step size (default: the optimiser's; "
                             "sgd: the paper's 1e-3, a checkpoint brings its own, 5e-4 for "
                             "ethanol as in the paper)."),
    xc: str = typer.Option("pbe", "--xc", help="Exchange-correlation functional: pbe or lda."),
    rule: str = typer.Option(None, "--rule", help="Reported step: iid (smallest energy change), "
                             "ood (first local minimum of the gradient norm, spec §4.5) or last "
                             "(the last iterate). Default: iid for sgd, last otherwise."),
    gtol: float = typer.Option(1e-4, "--gtol", min=0.0, help="Convergence tolerance on the "
                               "projected gradient norm |P grad E|."),
    stop_at_gtol: bool = typer.Option(None, "--stop-at-gtol/--run-all-steps", help="Stop at "
                                      "the tolerance, or run all --max-steps steps (default: "
                                      "all steps for sgd, the paper's protocol; stop otherwise)."),
    negative_density_penalty: float = typer.Option(0.0, "--negative-density-penalty", min=0.0,
                                                   help="Add c * integral of max(-rho, 0) to "
                                                   "the energy, c in Ha per electron (the "
                                                   "paper's optional penalty, SI B.5.1; off)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display on the terminal."),
    basis: str = typer.Option(None, "--basis", help="Orbital basis of the initial guess and the "
                              "KS reference (default: the paper's 6-31G(2df,p)). The density "
                              "basis is always the paper's even-tempered basis."),
    grid_level: int = typer.Option(None, "--grid-level", help="PySCF grid level (0 to 9) of "
                                   "the kinetic and XC terms (paper: 2; a checkpoint defaults to "
                                   "the grid level of its labels)."),
    grid_dtype: str = typer.Option("float64", "--grid-dtype", help="Storage type of the basis "
                                   "values on the grid: float64, or float32 (half the memory, "
                                   "~25 % faster grid terms, ~1e-8 relative energy error)."),
    index: int = typer.Option(0, "--index", min=0, help="Which molecule of a multi-molecule "
                              "file."),
    charge: int = typer.Option(None, "--charge", help="Total charge of the molecule, "
                               "replacing the file's (default: the file's, which must be 0). "
                               "The electron count must stay even: closed shells only."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    trajectory: Path = typer.Option(None, "--trajectory", help="Write the per-step trajectory "
                                    "as CSV: energy, delta_energy_ha = E_k - E_(k-1) (negative "
                                    "while descending), terms, gradient norms, electron count."),
    cube: Path = typer.Option(None, "--cube", help="Write the reported density as a Gaussian "
                              "cube file (VMD, VESTA)."),
    max_memory: float = typer.Option(None, "--max-memory", help="Memory limit (GiB) of the "
                                     "up-front estimate (integrals, grid, trajectory) that refuses "
                                     "a job too large (default: this machine's memory; a larger "
                                     "value runs it anyway)."),
):
    """Optimise the density of FILE with a classical or learned kinetic functional (OFDFT).

    Projected gradient descent under wᵀp = N from the chosen initial density (default: ProjMINAO
    for a learned-functional checkpoint, as in the ASE calculator; MINAO for a classical
    functional); reports the energy
    (total and terms) and Hellmann–Feynman forces at the step chosen by the paper's rule, the
    true-convergence step and a status (converged / max-steps / diverged; exit status 1 when
    diverged).
    """
    from mofdft_jax.functionals import KINETIC_FUNCTIONALS, XC_FUNCTIONALS
    from mofdft_jax.qchem.guesses import INITIAL_GUESSES
    from mofdft_jax.solver.optimize import RULES
    from mofdft_jax.solver.optimizers import OPTIMIZERS

    from mofdft_jax.commands.learned_solve import default_init, is_checkpoint

    learned = is_checkpoint(functional)
    if not learned:
        check_checkpoint_path(functional, classical=KINETIC_FUNCTIONALS)
        _choices("--functional", functional, list(KINETIC_FUNCTIONALS))
    if init is None:
        init = default_init(learned)
    _choices("--init", init, list(INITIAL_GUESSES))
    _choices("--xc", xc, list(XC_FUNCTIONALS))
    if rule is not None:
        _choices("--rule", rule, list(RULES))
    _choices("--optimizer", optimizer, list(OPTIMIZERS))
    _choices("--grid-dtype", grid_dtype, ["float64", "float32"])
    check_basis_option("--basis", basis)
    check_grid_level_option("--grid-level", grid_level)
    check_positive("--lr", lr)
    check_output_path("--trajectory", trajectory)
    check_output_path("--cube", cube)
    check_positive("--max-memory", max_memory)
    check_steps_memory(steps, max_memory)

    from mofdft_jax.commands.interrupt import exit_on_interrupt

    with exit_on_interrupt():
        _solve_after_checks(file, functional=functional, learned=learned, init=init,
                            optimizer=optimizer, steps=steps, lr=lr, xc=xc, rule=rule, gtol=gtol,
                            stop_at_gtol=stop_at_gtol,
                            negative_density_penalty=negative_density_penalty, quiet=quiet,
                            basis=basis, grid_level=grid_level, grid_dtype=grid_dtype,
                            index=index, charge=charge, json_output=json_output,
                            trajectory=trajectory, cube=cube, max_memory=max_memory)


def _solve_after_checks(file, *, functional, learned, init, optimizer, steps, lr, xc, rule, gtol,
                        stop_at_gtol, negative_density_penalty, quiet, basis, grid_level,
                        grid_dtype, index, charge, json_output, trajectory, cube, max_memory):
    """``mofdft solve`` once its options are checked: the solve, its outputs and summary."""
    from rich.console import Console

    console = Console(stderr=True, quiet=quiet or json_output)
    solver_options = {"optimizer": optimizer, "stop_at_gtol": stop_at_gtol,
                      "negative_density_penalty": negative_density_penalty,
                      "max_memory_gib": max_memory}
    if learned:
        from mofdft_jax.commands.learned_solve import run_solve_learned

        summary, result = run_solve_learned(file, functional, init=init, steps=steps, lr=lr,
                                            rule=rule, gtol=gtol, basis=basis,
                                            grid_level=grid_level, index=index,
                                            charge=charge,
                                            grid_dtype=grid_dtype,
                                            trajectory=trajectory, cube=cube, console=console,
                                            **solver_options)
    else:
        if init == "projminao":
            raise typer.BadParameter("projminao needs a learned functional (--functional "
                                     "CHECKPOINT)", param_hint="'--init'")
        summary, result = run_solve(file, functional=functional, init=init, steps=steps,
                                    lr=lr, xc=xc, rule=rule, gtol=gtol,
                                    basis=basis, grid_level=2 if grid_level is None else grid_level,
                                    index=index, charge=charge, trajectory=trajectory, cube=cube,
                                    console=console, grid_dtype=grid_dtype, **solver_options)
    if json_output:
        echo_json("solve", summary)
    else:
        _print_summary(summary)
    if result.diverged:
        Console(stderr=True).print(f"[bold red]{result.message}[/]", highlight=False)
        raise typer.Exit(1)


def _frame_source(file, index: int, n_molecules: int) -> str:
    """How messages name molecule ``index`` of ``file`` (the frame only when there are several)."""
    return f"{file}" + (f" frame {index}" if n_molecules > 1 else "")


def cli_refusal_advice():
    """The charge / open-shell advice of ``mofdft ks`` and ``mofdft solve``: their options."""
    from mofdft_jax.molecules.validate import RefusalAdvice

    return RefusalAdvice(
        charged="run it anyway with --charge {charge}",
        open_shell="mofdft ks and solve compute closed shells only and have no --spin; for an ion "
                   "give its charge with --charge")


def read_cli_molecule(file, index: int = 0, charge: int | None = None):
    """Molecule ``index`` of ``file`` as ``mofdft ks`` / ``solve`` take it, or :class:`InputError`.

    ``charge`` (``--charge``) replaces the file's total charge before the checks; without it the
    file's charge must be 0. Checks: those of :func:`~mofdft_jax.molecules.validate_molecule`
    (charge and open-shell refusals naming the CLI options, :func:`cli_refusal_advice`), the index
    range and :func:`~mofdft_jax.molecules.validate.check_fragments`.
    """
    import dataclasses

    from mofdft_jax.molecules import InputError
    from mofdft_jax.molecules.io import read_molecules
    from mofdft_jax.molecules.validate import check_fragments, refusal_advice, validate_molecule

    with refusal_advice(cli_refusal_advice()):
        molecules = read_molecules(str(file), validate=charge is None)
        if not 0 <= index < len(molecules):
            raise InputError(f"{file}: --index {index} out of range ({len(molecules)} "
                             "molecule(s))")
        molecule = molecules[index]
        source = _frame_source(file, index, len(molecules))
        if charge is not None:
            molecule = dataclasses.replace(molecule, charge=int(charge))
            validate_molecule(molecule, allow_charged=True, source=source)
    return check_fragments(molecule, source=source)


def run_solve(file: str, *, functional: str = "apbe", init: str = "minao", steps: int = 1000,
              lr: float | None = None, xc: str = "pbe", rule: str | None = None,
              gtol: float = 1e-4, basis: str | None = None, grid_level: int = 2, index: int = 0,
              charge: int | None = None,
              trajectory: Path | None = None, cube: Path | None = None, console=None,
              grid_dtype: str = "float64", optimizer: str = "sgd",
              stop_at_gtol: bool | None = None, negative_density_penalty: float = 0.0,
              max_memory_gib: float | None = None):
    """Everything ``mofdft solve`` does; returns ``(summary dict, SolveResult)``.

    ``optimizer``, ``lr``, ``rule`` and ``stop_at_gtol`` as in :func:`mofdft_jax.solver.solve`
    (``None``: that optimiser's defaults, :func:`~mofdft_jax.solver.resolve_solver_defaults`).
    Before the integrals, the memory of the job is estimated, printed on ``console`` and checked
    against ``max_memory_gib`` (:func:`check_memory_estimate`).
    """
    import numpy as np

    from mofdft_jax.solver import get_optimizer, resolve_solver_defaults

    from mofdft_jax.config import ensure_x64
    from mofdft_jax.qchem.basis import PAPER_BASIS, make_auxmol, make_mol
    from mofdft_jax.qchem.estimate import estimate_solve_memory
    from mofdft_jax.qchem.guesses import initial_guess
    from mofdft_jax.qchem.integrals import build_integral_bundle
    from mofdft_jax.qchem.settings import PAPER_SETTINGS
    from mofdft_jax.solver import make_energy_fn, solve

    ensure_x64()
    t_start = time.perf_counter()
    basis = basis or PAPER_BASIS
    spec = get_optimizer(optimizer)
    lr, rule, stop_at_gtol = resolve_solver_defaults(optimizer, lr=lr, rule=rule,
                                                     stop_at_gtol=stop_at_gtol)
    molecule = read_cli_molecule(file, index, charge)

    progress = make_progress(console)
    with progress:
        setup = progress.add_task(f"{molecule.name}: integrals", total=None, info="")
        mol = make_mol(molecule, basis)
        auxmol = make_auxmol(mol)
        natm, naux = mol.natm, auxmol.nao_nr()
        with_forces = natm * 3 * naux * 8 <= MAX_FORCE_INTEGRALS_BYTES
        report_memory_estimate(
            estimate_solve_memory(mol, auxmol, grid_level=grid_level, grid_dtype=grid_dtype,
                                  with_overlap=spec.uses_metric, with_forces=with_forces,
                                  name=molecule.name,
                                  extra={"trajectory": trajectory_buffer_bytes(steps)}),
            progress.console, max_memory_gib)
        # the preconditioned optimisers' metric S + W̃ needs the density-basis overlap
        bundle = build_integral_bundle(mol, auxmol, grid_level=grid_level,
                                       with_forces=with_forces, with_overlap=spec.uses_metric,
                                       grid_dtype=grid_dtype)
        progress.update(setup, description=f"{molecule.name}: initial guess ({init})")
        settings = PAPER_SETTINGS.replace(basis=basis, grid_level=grid_level, xc=PYSCF_XC[xc])
        guess = initial_guess(init, mol, auxmol, settings=settings)
        progress.update(setup, visible=False)
        t_setup = time.perf_counter() - t_start

        energy_terms_fn, _ = make_energy_fn(functional, xc=xc,
                                            negative_density_penalty=negative_density_penalty)
        label = f"{molecule.name}: {functional}+{xc} {optimizer}"
        on_progress, task = make_progress_callback(progress, label, steps)

        t_solve0 = time.perf_counter()
        result = solve(energy_terms_fn, guess.coeffs, bundle, steps=steps, lr=lr, gtol=gtol,
                       rule=rule, optimizer=optimizer, stop_at_gtol=stop_at_gtol,
                       progress=on_progress)
        solve_wall_s = time.perf_counter() - t_solve0
        progress.update(task, completed=steps + 1)

    forces = finish_solution(result, bundle, mol, auxmol, with_forces=with_forces,
                             trajectory=trajectory, cube=cube,
                             label=f"{molecule.name} {functional}+{xc}")

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
        "functional": functional,
        "xc": xc,
        "init": init,
        "basis": basis,
        "grid_level": grid_level,
        "grid_dtype": grid_dtype,
        "lr": lr,
        "steps": steps,
        "rule": rule,
        **solver_summary(result),
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


#: Seconds between two plain progress lines of a solve when stderr is not a terminal.
PLAIN_PROGRESS_INTERVAL_S = 5.0


def make_progress(console):
    """The progress display of a solve (a rich ``Progress`` that flushes its
    :class:`PlainProgress` reporters when it stops): on a terminal a rich bar
    (description, bar, energy and |P grad E|, elapsed time, ETA; transient); on a non-terminal
    console (a pipe, a log file) plain lines instead; nothing with a quiet console."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return _solve_progress_class()(TextColumn("{task.description}"), BarColumn(),
                                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                   TextColumn("ETA"), TimeRemainingColumn(), console=console,
                                   transient=True)


@functools.lru_cache(maxsize=1)
def _solve_progress_class():
    """The ``SolveProgress`` class (built on first use: rich is imported lazily)."""
    from rich.progress import Progress

    class SolveProgress(Progress):
        """A rich ``Progress`` that also owns the plain-line reporters of
        :func:`make_progress_callback`; leaving it (``stop``) prints each reporter's last state
        if that was not printed yet."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.plain_reporters = []

        def stop(self):
            for reporter in self.plain_reporters:
                reporter.flush()
            super().stop()

    return SolveProgress


class PlainProgress:
    """Plain progress lines of one solve on a non-terminal console: ``LABEL: step K/N  E = ... Ha
    |P grad E| = ...  T s`` at the first report, then at most every ``interval_s`` seconds, and the
    last reported state (:meth:`flush`); silent on a terminal (the bar shows it) or a quiet
    console."""

    def __init__(self, console, label: str, steps: int, interval_s: float | None = None):
        self.console, self.label, self.steps = console, label, int(steps)
        self.interval_s = PLAIN_PROGRESS_INTERVAL_S if interval_s is None else interval_s
        self.active = console is not None and not console.quiet and not console.is_terminal
        self.t0 = time.perf_counter()
        self.last_printed = None
        self.pending = None
        if self.active:
            self._print(f"{label}: up to {self.steps} steps (compiling)")

    def _print(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True, markup=False)

    def _line(self, step, energy, pgn) -> str:
        return (f"{self.label}: step {step}/{self.steps}  E = {energy:.8f} Ha  "
                f"|P grad E| = {pgn:.2e}  {time.perf_counter() - self.t0:.1f} s")

    def __call__(self, step, energy, pgn) -> None:
        if not self.active:
            return
        now = time.perf_counter()
        if self.last_printed is None or now - self.last_printed >= self.interval_s:
            self._print(self._line(step, energy, pgn))
            self.last_printed, self.pending = now, None
        else:
            self.pending = (step, energy, pgn)

    def flush(self) -> None:
        """Print the last reported state if it was not printed."""
        if self.active and self.pending is not None:
            self._print(self._line(*self.pending))
            self.pending = None


def make_progress_callback(progress, label: str, steps: int):
    """``(fn, task)``: a task of ``steps + 1`` states and the ``progress=`` callback of
    :func:`mofdft_jax.solver.solve` that advances it (step, E, |P grad E|) and, on a non-terminal
    console, prints :class:`PlainProgress` lines. With a tolerance stop the bar ends early; the
    ETA is that of the maximum number of steps."""
    task = progress.add_task(f"{label} (compiling)", total=steps + 1, info="")
    plain = PlainProgress(progress.console, label, steps)
    if hasattr(progress, "plain_reporters"):
        progress.plain_reporters.append(plain)

    def on_progress(step, energy, pgn):
        progress.update(task, completed=step + 1, description=label,
                        info=f"step {step}  E = {energy:.8f} Ha  |Pg| = {pgn:.2e}")
        plain(step, energy, pgn)

    return on_progress, task


def solver_summary(result) -> dict:
    """The optimiser fields of a solve's JSON summary (shared by the classical and the learned
    ``mofdft solve``): optimiser, stopping, steps and evaluations to convergence, metric,
    negative-density measure and warnings."""
    return {
        "optimizer": result.optimizer,
        "stop_at_gtol": result.stop_at_gtol,
        "max_steps": result.max_steps,
        "steps_to_convergence": result.converged_step,
        "n_evaluations": result.n_evaluations,
        "metric": result.metric,
        "negative_density": result.negative_density,
        "warnings": list(result.warnings),
    }


def finish_solution(result, bundle, mol, auxmol, *, with_forces: bool, trajectory, cube,
                    label: str):
    """Hellmann–Feynman forces of the reported density (``(natm, 3)`` Ha/Bohr: from the bundle's
    force integrals when it has them, else from PySCF), and the optional trajectory CSV and
    density cube of a solve (shared by the classical and the learned ``mofdft solve``)."""
    import numpy as np

    from mofdft_jax.qchem.integrals import hf_forces as host_hf_forces
    from mofdft_jax.solver import hf_forces

    from mofdft_jax.atomic_io import atomic_path

    if with_forces:
        forces = np.asarray(hf_forces(result.coeffs, bundle))
    else:
        forces = host_hf_forces(result.coeffs, mol, auxmol)
    if trajectory is not None:
        with atomic_path(trajectory) as tmp:
            write_trajectory_csv(tmp, result)
    if cube is not None:
        from mofdft_jax.qchem.cube import write_density_cube

        with atomic_path(cube) as tmp:
            write_density_cube(tmp, result.coeffs, mol, auxmol,
                               comment=f"M-OFDFT density {label} step {result.chosen_step} "
                                       "(e/Bohr^3)")
    return forces


def write_trajectory_csv(path: Path, result) -> None:
    """One row per state k: step, energy E_k, ``delta_energy_ha`` = E_k − E_{k−1} (signed:
    negative while the energy falls; empty for k = 0), |∇E| and |P∇E|, electron count, and every
    energy term (Ha)."""
    traj = result.trajectory
    names = list(traj.terms)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "energy_ha", "delta_energy_ha", "grad_norm", "proj_grad_norm",
                         "n_electrons"] + [f"{n}_ha" for n in names])
        for i in range(len(traj.energy)):
            writer.writerow([i, repr(float(traj.energy[i])),
                             "" if i == 0 else repr(float(traj.energy[i] - traj.energy[i - 1])),
                             repr(float(traj.grad_norm[i])), repr(float(traj.proj_grad_norm[i])),
                             repr(float(traj.n_electrons[i]))]
                            + [repr(float(traj.terms[n][i])) for n in names])


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mofdft solve {summary['molecule']} ({summary['formula']}): "
                        f"{summary['functional']}+{summary['xc']}, init {summary['init']}",
                  show_header=False)
    table.add_row("total energy", f"{summary['energy_total_ha']:.8f} Ha")
    for name, value in summary["terms"].items():
        table.add_row(f"  {name}", f"{value:.8f} Ha")
    ref = summary["ks_reference"]
    if ref:
        table.add_row("KS reference", f"{ref['e_tot']:.8f} Ha")
    table.add_row("reported step", f"{summary['chosen_step']} of {summary['n_steps']} "
                                   f"({summary['rule']} rule)")
    table.add_row("converged step", "none" if summary["converged_step"] is None
                  else str(summary["converged_step"]))
    table.add_row("|P grad E|", f"{summary['proj_grad_norm']:.3e} (gtol {summary['gtol']:g})")
    table.add_row("optimizer", f"{summary['optimizer']} (lr {summary['lr']:g}"
                  + (f", metric {summary['metric']}" if summary.get("metric") else "") + ")")
    table.add_row("status", summary["status"])
    if summary.get("negative_density") is not None:
        table.add_row("negative density", f"{summary['negative_density']:.3e} electrons"
                      + (" [bold yellow](warning)[/]" if summary["warnings"] else ""))
    table.add_row("electrons", f"{summary['electron_count']:.12f}")
    fmax = max(max(abs(x) for x in row) for row in summary["forces_ha_per_bohr"])
    table.add_row("max |HF force|", f"{fmax:.6f} Ha/Bohr")
    table.add_row("wall time", f"{summary['wall_s']:.1f} s (setup {summary['setup_wall_s']:.1f} s, "
                               f"solve {summary['solve_wall_s']:.1f} s)")
    Console().print(table)

"""``mofdft ks FILE``: one restricted KS-DFT reference with the paper's settings (spec §1.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer

from mofdft_jax.commands.output import echo_json


def _density_fit_option(value: str) -> bool | str:
    value = value.lower()
    if value == "auto":
        return "auto"
    if value in ("on", "yes", "true", "1"):
        return True
    if value in ("off", "no", "false", "0"):
        return False
    raise typer.BadParameter(f"--density-fit must be auto, on or off (got {value!r})")


def ks_summary(run, observables: dict | None = None) -> dict:
    """JSON-able summary of a :class:`~mofdft_jax.qchem.ksdft.KSRun` (energies in Hartree) and,
    when given, of its :func:`~mofdft_jax.qchem.ksdft.ks_observables` (dipole in e·Bohr and Debye,
    orbital energies, HOMO/LUMO and gap in Ha and eV, analytic forces in Ha/Bohr)."""
    from mofdft_jax.units import AU_TO_DEBYE, HARTREE_TO_EV

    e = run.final_energies()
    mol = run.molecule
    extra = {}
    if observables is not None:
        gap = observables["gap_ha"]
        extra = {
            "dipole_au": observables["dipole_au"].tolist(),
            "dipole_debye": (observables["dipole_au"] * AU_TO_DEBYE).tolist(),
            "dipole_norm_debye": float(np.linalg.norm(observables["dipole_au"]) * AU_TO_DEBYE),
            "homo_ha": observables["homo_ha"],
            "lumo_ha": observables["lumo_ha"],
            "gap_ha": gap,
            "gap_ev": None if gap is None else gap * HARTREE_TO_EV,
            "mo_energy_ha": observables["mo_energy_ha"].tolist(),
        }
        if "forces_ha_per_bohr" in observables:
            forces = observables["forces_ha_per_bohr"]
            extra["forces_ha_per_bohr"] = forces.tolist()
            extra["net_force_ha_per_bohr"] = float(np.linalg.norm(forces.sum(axis=0)))
    return {
        "molecule": mol.name,
        "formula": mol.formula,
        "charge": int(mol.charge),
        "n_atoms": mol.natm,
        "n_electrons": mol.n_electrons,
        "energy_total_ha": e["e_tot"],
        "kinetic_ha": e["kinetic"],
        "hartree_ha": e["hartree"],
        "xc_ha": e["xc"],
        "external_ha": e["external"],
        "nuclear_repulsion_ha": e["e_nuc"],
        "n_scf_steps": run.n_cycles,
        "n_recorded_steps": run.n_steps,
        "converged": run.converged,
        "wall_s": run.wall_s,
        "settings": {
            "basis": run.settings.basis,
            "xc": run.settings.xc,
            "grid_level": run.settings.grid_level,
            "conv_tol": run.settings.conv_tol,
            "init_guess": run.settings.init_guess,
            "density_fit": run.settings.uses_density_fit(mol.natm),
            "df_auxbasis": run.settings.df_auxbasis,
            "nao": int(run.mol.nao_nr()),
        },
        **extra,
    }


def ks(
    file: Path = typer.Argument(..., help="Molecule file (.xyz, .pdb, .npz, .smi) or "
                                "smiles:<SMILES>."),
    index: int = typer.Option(0, "--index", help="Which molecule of a multi-molecule file."),
    charge: Optional[int] = typer.Option(None, "--charge", help="Total charge, replacing the "
                                         "file's (default: the file's, which must be 0); the "
                                         "electron count must stay even (restricted KS)."),
    basis: Optional[str] = typer.Option(None, "--basis", help="Orbital basis, a PySCF name "
                                        "(paper: 6-31G(2df,p))."),
    grid_level: Optional[int] = typer.Option(None, "--grid-level", help="PySCF grid level, 0 "
                                             "to 9 (paper: 2)."),
    density_fit: str = typer.Option("auto", "--density-fit", help="auto (paper: DF above 30 "
                                    "atoms), on or off."),
    xc: Optional[str] = typer.Option(None, "--xc", help="XC functional: pbe (paper) or lda, the "
                                     "functionals of mofdft solve --xc."),
    conv_tol: Optional[float] = typer.Option(None, "--conv-tol", help="Energy convergence, Ha, "
                                             "> 0 (paper: 1 meV = 3.674932e-5)."),
    max_cycle: Optional[int] = typer.Option(None, "--max-cycle", help="Maximum SCF cycles, "
                                            ">= 1 (default 50)."),
    forces: bool = typer.Option(True, "--forces/--no-forces", help="Analytic KS forces (PySCF "
                                "nuclear gradients, Pulay terms included; about the cost of a few "
                                "SCF cycles)."),
    cube: Optional[Path] = typer.Option(None, "--cube", help="Write the KS density as a Gaussian "
                                        "cube file (80^3 points, PySCF cubegen; VMD, VESTA)."),
    max_memory: Optional[float] = typer.Option(None, "--max-memory", help="Memory limit (GiB) "
                                               "of the up-front estimate that refuses a job too "
                                               "large (default: this machine's memory; a larger "
                                               "value runs it anyway)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
):
    """One KS-DFT reference (restricted PBE/6-31G(2df,p), grid 2, 1 meV, DIIS, MINAO).

    Reports the total energy and its terms, the analytic forces, the dipole moment, the orbital
    energies with the HOMO-LUMO gap, and (--cube) the density. An SCF that does not converge within
    --max-cycle cycles is an error (exit status 1, the last energy change on stderr, nothing on
    stdout).
    """
    from rich.console import Console

    from mofdft_jax.commands.solve import (PYSCF_XC, check_basis_option, check_choice,
                                           check_grid_level_option, check_output_path,
                                           check_positive, read_cli_molecule,
                                           report_memory_estimate)
    from mofdft_jax.qchem.basis import make_mol
    from mofdft_jax.qchem.estimate import estimate_ks_memory
    from mofdft_jax.qchem.ksdft import ks_observables, run_ks
    from mofdft_jax.qchem.settings import PAPER_SETTINGS

    check_basis_option("--basis", basis)
    check_grid_level_option("--grid-level", grid_level)
    if xc is not None:
        check_choice("--xc", xc.lower(), list(PYSCF_XC))
    check_positive("--conv-tol", conv_tol)
    if max_cycle is not None and max_cycle < 1:
        raise typer.BadParameter(f"must be at least 1 (got {max_cycle})",
                                 param_hint="'--max-cycle'")
    fit = _density_fit_option(density_fit)
    check_output_path("--cube", cube)
    check_positive("--max-memory", max_memory)

    molecule = read_cli_molecule(file, index, charge)
    changes = {"density_fit": fit}
    for name, value in (("basis", basis), ("grid_level", grid_level),
                        ("xc", None if xc is None else PYSCF_XC[xc.lower()]),
                        ("conv_tol", conv_tol), ("max_cycle", max_cycle)):
        if value is not None:
            changes[name] = value
    settings = PAPER_SETTINGS.replace(**changes)

    from mofdft_jax.commands.interrupt import exit_on_interrupt

    console = Console(stderr=True)
    mol = make_mol(molecule, settings.basis, max_memory_mb=settings.max_memory_mb)
    report_memory_estimate(estimate_ks_memory(mol, settings, name=molecule.name),
                           None if json_output else console, max_memory)
    title = f"KS-DFT {molecule.name} ({molecule.formula}, {settings.basis})"
    with exit_on_interrupt(), console.status(title) as status:
        def on_step(k, e_tot, delta_e):
            status.update(f"KS-DFT {molecule.name}: step {k}  E = {e_tot:.10f} Ha  "
                          f"ΔE = {delta_e:+.2e}")

        run = run_ks(molecule, settings, mol=mol, on_step=on_step)
        if run.converged:
            if forces:
                status.update(f"KS-DFT {molecule.name}: analytic forces")
            observables = ks_observables(run, with_forces=forces)
            if cube is not None:
                from pyscf.tools import cubegen

                from mofdft_jax.atomic_io import atomic_path

                status.update(f"KS-DFT {molecule.name}: density cube")
                with atomic_path(cube) as tmp:
                    cubegen.density(run.mol, str(tmp), run.dm)
    if not run.converged:
        e_tot = run.energies["e_tot"]
        delta = float(e_tot[-1] - e_tot[-2]) if len(e_tot) > 1 else float("nan")
        console.print(f"[bold red]error:[/] {molecule.name}: SCF not converged in "
                      f"{settings.max_cycle} cycles (last ΔE = {delta:+.3e} Ha, --conv-tol "
                      f"{settings.conv_tol:.3e}); no result: raise --max-cycle, or the "
                      "closed-shell singlet may not be this molecule's ground state",
                      highlight=False,
                      soft_wrap=True)
        raise typer.Exit(1)
    summary = ks_summary(run, observables)
    if json_output:
        echo_json("ks", summary)
        return
    from rich.table import Table

    table = Table(title=f"KS-DFT {summary['molecule']} ({summary['formula']})", show_header=False)
    for key in ("energy_total_ha", "kinetic_ha", "hartree_ha", "xc_ha", "external_ha",
                "nuclear_repulsion_ha"):
        table.add_row(key, f"{summary[key]:.10f}")
    for key in ("n_scf_steps", "converged", "wall_s"):
        table.add_row(key, f"{summary[key]:.2f}" if key == "wall_s" else str(summary[key]))
    table.add_row("homo / lumo", f"{summary['homo_ha']:.6f} / "
                  + ("none" if summary["lumo_ha"] is None else f"{summary['lumo_ha']:.6f}") + " Ha")
    if summary["gap_ev"] is not None:
        table.add_row("homo-lumo gap", f"{summary['gap_ev']:.4f} eV")
    table.add_row("dipole", "(" + ", ".join(f"{x:+.4f}" for x in summary["dipole_debye"])
                  + f") D, |mu| = {summary['dipole_norm_debye']:.4f} D")
    if "forces_ha_per_bohr" in summary:
        fmax = max(max(abs(x) for x in row) for row in summary["forces_ha_per_bohr"])
        table.add_row("max |force|", f"{fmax:.6f} Ha/Bohr (net "
                      f"{summary['net_force_ha_per_bohr']:.1e})")
    if cube is not None:
        table.add_row("density cube", str(cube))
    for key, value in summary["settings"].items():
        table.add_row(key, str(value))
    Console().print(table)

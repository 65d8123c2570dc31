"""``mofdft ks FILE``: one restricted KS-DFT reference with the paper's settings (spec §1.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def _density_fit_option(value: str) -> bool | str:
    value = value.lower()
    if value == "auto":
        return "auto"
    if value in ("on", "yes", "true", "1"):
        return True
    if value in ("off", "no", "false", "0"):
        return False
    raise typer.BadParameter(f"--density-fit must be auto, on or off (got {value!r})")


def ks_summary(run) -> dict:
    """JSON-able summary of a :class:`~mofdft_jax.qchem.ksdft.KSRun` (energies in Hartree)."""
    e = run.final_energies()
    mol = run.molecule
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
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
):
    """One KS-DFT reference (restricted PBE/6-31G(2df,p), grid 2, 1 meV, DIIS, MINAO).

    An SCF that does not converge within --max-cycle cycles is an error (exit status 1, the last
    energy change on stderr, nothing on stdout).
    """
    from rich.console import Console

    from mofdft_jax.commands.solve import (PYSCF_XC, check_basis_option, check_choice,
                                           check_grid_level_option, check_positive,
                                           read_cli_molecule)
    from mofdft_jax.qchem.ksdft import run_ks
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
    with exit_on_interrupt(), console.status(f"KS-DFT {molecule.name} ({molecule.formula}, {settings.basis})") as status:
        def on_step(k, e_tot, delta_e):
            status.update(f"KS-DFT {molecule.name}: step {k}  E = {e_tot:.10f} Ha  "
                          f"ΔE = {delta_e:+.2e}")

        run = run_ks(molecule, settings, on_step=on_step)
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
    summary = ks_summary(run)
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"KS-DFT {summary['molecule']} ({summary['formula']})", show_header=False)
    for key in ("energy_total_ha", "kinetic_ha", "hartree_ha", "xc_ha", "external_ha",
                "nuclear_repulsion_ha"):
        table.add_row(key, f"{summary[key]:.10f}")
    for key in ("n_scf_steps", "converged", "wall_s"):
        table.add_row(key, f"{summary[key]:.2f}" if key == "wall_s" else str(summary[key]))
    for key, value in summary["settings"].items():
        table.add_row(key, str(value))
    Console().print(table)

"""``mofdft diagnose``: is the KS density a minimum of a learned energy? (issue 19 diagnostics).

For held-out molecules of a labelled dataset: the energy error and projected gradient at the KS
density p*, the negative curvature modes of the total energy there (Hessian in the Coulomb metric
on the plane wᵀδ = 0), and where a minimisation from ProjMINAO ends (Coulomb-norm distance to p*,
energy error, status). See :mod:`mofdft_jax.workflows.landscape`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mofdft_jax.commands.output import echo_json


def diagnose(checkpoint: str = typer.Argument(..., help="Learned-functional checkpoint stem."),
             data: str = typer.Option(..., "--data", help="Labelled dataset directory."),
             split: str = typer.Option("test", "--split", help="Split of the dataset's recipe "
                                       "splits to diagnose: train, val or test."),
             n: int = typer.Option(4, "--n", min=1, help="Number of molecules of the split."),
             steps: int = typer.Option(1000, "--steps", min=0, help="Solver steps from ProjMINAO "
                                       "(0: only the diagnostics at p*)."),
             optimizer: str = typer.Option("sgd", "--optimizer", help="Density optimiser of the "
                                           "minimisation (the solver's registry; sgd is the "
                                           "paper's)."),
             gtol: float = typer.Option(1e-4, "--gtol", min=0.0, help="Tolerance on |P grad E|."),
             no_hessian: bool = typer.Option(False, "--no-hessian", help="Skip the Hessian "
                                             "(about 20 s for ethanol with the small network)."),
             out: Path = typer.Option(None, "--out", help="Also write the rows as JSON here."),
             json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout.")):
    """Diagnose a learned functional at the KS densities of held-out molecules."""
    from rich.console import Console
    from rich.table import Table

    from mofdft_jax.commands.learned_solve import load_functional
    from mofdft_jax.data.loader import open_dataset
    from mofdft_jax.data.splits import make_splits
    from mofdft_jax.molecules import InputError
    from mofdft_jax.workflows.landscape import landscape_at_reference

    functional, info = load_functional(checkpoint)
    dataset = open_dataset(data)
    splits = make_splits(dataset)
    if split not in splits:
        raise InputError(f"{data}: no split {split!r} (splits: {', '.join(splits)})")
    files = splits[split][:n]
    console = Console(stderr=True)
    rows = []
    for file in files:
        console.print(f"{file}: diagnosing", highlight=False)
        row = landscape_at_reference(functional, info, dataset.read(file), steps=steps,
                                     with_hessian=not no_hessian, optimizer=optimizer, gtol=gtol)
        rows.append({"file": file, **row})
    if out is not None:
        out.write_text(json.dumps(rows, indent=1) + "\n")
    if json_output:
        echo_json("diagnose", {"checkpoint": str(checkpoint), "split": split, "molecules": rows})
        return
    table = Table(title=f"{checkpoint} at the KS densities of {len(rows)} {split} molecules")
    cols = [("molecule", "molecule", "{}"),
            ("E(p*)-E_KS kcal", "energy_error_at_ref_kcal", "{:.2f}"),
            ("|PgradE(p*)|", "proj_grad_norm_at_ref", "{:.3g}"),
            ("neg. modes", "n_negative_modes", "{}"), ("lowest", "lowest_eigenvalues", "{}"),
            ("|p0-p*|", "init_distance", "{:.3f}"), ("|p-p*| end", "final_distance", "{:.3f}"),
            ("E_end-E_KS kcal", "energy_error_final_kcal", "{:.2f}"),
            ("status", "solve_status", "{}")]
    for title, _, _ in cols:
        table.add_column(title)
    for row in rows:
        cells = []
        for _, key, fmt in cols:
            value = row.get(key)
            if key == "lowest_eigenvalues" and value:
                value = f"{value[0]:.3g}"
            cells.append("-" if value is None else fmt.format(value))
        table.add_row(*cells)
    Console(width=max(Console().width, 130)).print(table)

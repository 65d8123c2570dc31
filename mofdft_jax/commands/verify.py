"""``mofdft verify``: judge every paper claim against the results folder and write VERIFY.md."""

from __future__ import annotations

from pathlib import Path

import typer

from mofdft_jax.commands.output import echo_json


def verify(
    results: Path = typer.Option(Path("results"), "--results", help="Results folder to read."),
    json_output: bool = typer.Option(False, "--json", help="Print the verdicts as JSON."),
):
    """Write RESULTS/VERIFY.md: one row per paper claim with our value, its scale and a status.

    The exit status is 0 whenever the report was written, including for honest "not reproduced"
    rows; it is non-zero only for malformed inputs (internal errors of the suite).
    """
    from reproduce.verify import STATUSES, verify as run_verify, write_verify_report

    if not results.is_dir():
        raise FileNotFoundError(f"results folder {results} does not exist")
    verdicts = run_verify(results)
    path = write_verify_report(verdicts, results)
    if json_output:
        echo_json("verify", {"report": str(path), "verdicts": [v.__dict__ for v in verdicts]})
        return
    from rich.console import Console
    from rich.table import Table

    counts = {s: sum(v.status == s for v in verdicts) for s in STATUSES}
    table = Table(title=f"paper claims ({path})")
    table.add_column("status")
    table.add_column("claims", justify="right")
    for status, n in counts.items():
        table.add_row(status, str(n))
    Console(stderr=True).print(table)

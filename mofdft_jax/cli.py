"""The ``mofdft`` command line (typer + rich).

Every subcommand lives in ``mofdft_jax/commands/<name>.py`` as a plain function registered below.
Conventions shared by all subcommands:

* float64 JAX is switched on before any command runs;
* bad input (:class:`mofdft_jax.molecules.InputError`, missing files, unknown options) prints one
  red line ``error: ...`` and exits with status 2; ``--debug`` shows the traceback instead;
* ``--json`` (every command that computes something) prints one JSON object on one line on
  stdout and nothing else, its first key ``"schema": "mofdft.<command>/1"``, NaN as ``null``
  (:mod:`mofdft_jax.commands.output`); progress goes to stderr;
* Ctrl-C ends ``solve`` and ``ks`` within a second with status 130 and no half-written output
  (:mod:`mofdft_jax.commands.interrupt`), other commands with one line and status 130;
* help is click's plain formatter (``rich_markup_mode=None``): flags are listed without a value
  type (``--json``, not ``--json <bool>``) and docstring paragraphs are refilled to the terminal.
"""

from __future__ import annotations

import os
import sys

import typer

from mofdft_jax._version import __version__

app = typer.Typer(
    name="mofdft",
    help="M-OFDFT in JAX: KS-DFT labels, learned kinetic functionals, orbital-free density "
    "optimisation and the reproduction of Zhang et al., Nat. Comput. Sci. 4, 210 (2024).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_STATE = {"debug": False}


def _version_callback(value: bool):
    if value:
        typer.echo(f"mofdft_jax {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
):
    """M-OFDFT in JAX."""
    _STATE["debug"] = debug


def _register_commands() -> None:
    """Attach the subcommands. Each module defines the functions named here."""
    from mofdft_jax.commands import COMMANDS

    for name, func in COMMANDS:
        app.command(name)(func)


def _user_error_types() -> tuple[type[BaseException], ...]:
    from mofdft_jax.model.checkpoint import CheckpointError
    from mofdft_jax.model.functional import UnseenElementError
    from mofdft_jax.molecules import InputError

    return (InputError, CheckpointError, UnseenElementError, FileNotFoundError, IsADirectoryError,
            PermissionError)


def _click_exit_code(exc: BaseException) -> int | None:
    """Exit status for click/typer control-flow exceptions (typer >= 0.29 vendors click), else None.

    Usage errors are shown the click way (usage line + message) and give status 2.
    """
    for cls in type(exc).__mro__:
        if cls.__name__ == "Exit" and hasattr(exc, "exit_code"):
            return int(exc.exit_code or 0)
        if cls.__name__ == "Abort":
            return 130
        if cls.__name__ == "ClickException":
            exc.show()
            return 2
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mofdft`` console script."""
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    from mofdft_jax.config import enable_x64

    enable_x64()
    _register_commands()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        # without standalone mode click returns a typer.Exit's code instead of raising it
        rc = app(args=argv, prog_name="mofdft", standalone_mode=False)
        if isinstance(rc, int) and rc != 0:
            return rc
    except _user_error_types() as exc:
        if debug:
            raise
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except SystemExit as exc:  # typer.Exit inside commands
        return int(exc.code or 0)
    except KeyboardInterrupt:  # commands without exit_on_interrupt (train: its state is atomic)
        if debug:
            raise
        sys.stderr.write("\ninterrupted (Ctrl-C)\n")
        return 130
    except Exception as exc:  # click usage errors and friends
        code = _click_exit_code(exc)
        if code is not None:
            return code
        if debug:
            raise
        from rich.console import Console

        Console(stderr=True).print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (rerun with --debug for the "
            "traceback)", highlight=False, soft_wrap=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

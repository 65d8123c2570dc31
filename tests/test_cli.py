"""The ``mofdft`` command line: version, error handling, float64 policy (issue 3).

Subprocess tests run the console script of the interpreter running the tests (the venv's
``mofdft``) with ``JAX_ENABLE_X64`` removed from the environment, so they prove the CLI switches
float64 on by itself and that importing the package does not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mofdft_jax import __version__
from mofdft_jax.cli import main


def mofdft_executable() -> str:
    """The ``mofdft`` console script installed next to the running interpreter."""
    candidate = Path(sys.executable).parent / "mofdft"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("mofdft")
    assert found, "the mofdft console script is not installed (pip install -e . in the venv)"
    return found


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def test_version_console_script():
    proc = run([mofdft_executable(), "--version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"mofdft_jax {__version__}"


def test_version_in_process(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mofdft_jax {__version__}"


def test_unknown_command_exit_2_without_traceback():
    proc = run([mofdft_executable(), "no-such-command"])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "no-such-command" in proc.stderr


def test_unknown_command_in_process(capsys):
    assert main(["no-such-command"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_debug_flag_accepted(capsys):
    assert main(["--debug", "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mofdft_jax"] == __version__


def test_info_json_reports_float64():
    proc = run([mofdft_executable(), "info", "--json"])
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)  # stdout holds exactly one JSON object, on one line
    assert proc.stdout.count("\n") == 1 and info["schema"] == "mofdft.info/1"
    assert info["jax_enable_x64"] is True
    assert info["mofdft_jax"] == __version__
    assert info["packages"]["jax"] and info["packages"]["pyscf"]
    assert info["packages"]["ase"]  # the ASE calculator's dependency (issue 18)


def test_import_does_not_enable_x64():
    """Importing the package, the CLI module and its commands leaves JAX in its float32 default."""
    code = ("import mofdft_jax, mofdft_jax.cli, mofdft_jax.commands, jax; "
            "print(jax.config.read('jax_enable_x64'), jax.numpy.zeros(1).dtype)")
    proc = run([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "float32"]


def test_json_convention_is_strict_json_with_a_schema_key():
    """``--json`` objects: the schema key first, NumPy values as numbers and lists, NaN and inf
    as null (strict JSON), one line."""
    import numpy as np

    from mofdft_jax.commands.output import JSON_SCHEMA_VERSION, format_json

    text = format_json("solve", {"e": np.float64(-1.5), "nan": float("nan"),
                                 "v": np.array([1.0, np.inf]), "n": np.int64(3),
                                 "nested": {"t": (1, 2)}})
    assert "\n" not in text and "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert list(data)[0] == "schema" and data["schema"] == f"mofdft.solve/{JSON_SCHEMA_VERSION}"
    assert data == {"schema": "mofdft.solve/1", "e": -1.5, "nan": None, "v": [1.0, None],
                    "n": 3, "nested": {"t": [1, 2]}}

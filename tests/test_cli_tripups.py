"""What a new user trips over on ``mofdft ks`` / ``mofdft solve`` (issue 18).

Each test proves the behaviour of one row of the issue's table: the exit status (2 for a bad
option or input, 1 for a failure), one ``error`` line on stderr, no traceback, and nothing written
on stdout or to the output paths.
"""

from __future__ import annotations

import pytest

from mofdft_jax.cli import main

WATER_XYZ = """3
water
O 0.0 0.0 0.1173
H 0.0 0.7572 -0.4692
H 0.0 -0.7572 -0.4692
"""
#: O2 at its bond length: even electron count, but a triplet ground state; the closed-shell RKS
#: singlet oscillates (6-31G, grid 1: ΔE ~ 6e-5 Ha after 50 cycles, 2 s).
O2_XYZ = "2\nO2\nO 0 0 0\nO 0 0 1.208\n"
CHEAP = ["--basis", "sto-3g", "--grid-level", "0"]


@pytest.fixture(scope="module")
def water_xyz(tmp_path_factory):
    path = tmp_path_factory.mktemp("tripups") / "water.xyz"
    path.write_text(WATER_XYZ)
    return path


def error_lines(err: str, prefix: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(prefix)]


def assert_refused(capsys, args, code: int, *needles, prefix: str = "Error:"):
    """``main(args)`` exits with ``code``, prints nothing on stdout and exactly one line starting
    with ``prefix`` (click usage errors: ``Error:``; our errors: ``error:``) that holds every
    needle, and no traceback."""
    assert main(args) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    lines = error_lines(captured.err, prefix)
    assert len(lines) == 1, captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- row 1: mofdft ks -------------------------------------------------------------------------

def test_ks_unconverged_scf_is_an_error_naming_the_last_energy_change(tmp_path, capsys):
    path = tmp_path / "o2.xyz"
    path.write_text(O2_XYZ)
    assert main(["ks", str(path), "--basis", "6-31G", "--grid-level", "1", "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no energy printed as if it were valid
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert "not converged in 50 cycles" in lines[0] and "last ΔE = " in lines[0]


def test_ks_max_cycle_reached_is_an_error(water_xyz, capsys):
    line = assert_refused(capsys, ["ks", str(water_xyz), *CHEAP, "--max-cycle", "2"], 1,
                          "not converged in 2 cycles", "last ΔE", prefix="error:")
    assert "Ha" in line


@pytest.mark.parametrize("option, value, needle", [
    ("--conv-tol", "-1", "must be a positive number"),
    ("--conv-tol", "0", "must be a positive number"),
    ("--conv-tol", "nan", "must be a positive number"),
    ("--max-cycle", "0", "must be at least 1"),
    ("--basis", "foo-bar", "e.g. sto-3g"),
    ("--xc", "nonsense", "not one of pbe, lda"),
    ("--grid-level", "99", "(0 to 9)"),
    ("--grid-level", "-1", "(0 to 9)"),
])
def test_ks_bad_options_are_refused_up_front(water_xyz, capsys, option, value, needle):
    assert_refused(capsys, ["ks", str(water_xyz), option, value], 2, option, needle)


@pytest.mark.parametrize("option, value, needle", [
    ("--basis", "foo-bar", "e.g. sto-3g"),
    ("--grid-level", "99", "(0 to 9)"),
    ("--lr", "0", "must be a positive number"),
])
def test_solve_validates_with_the_same_helpers(water_xyz, capsys, option, value, needle):
    assert_refused(capsys, ["solve", str(water_xyz), option, value], 2, option, needle)


def test_ks_lda_is_the_solver_registry_name(water_xyz, capsys):
    """``--xc lda`` runs PySCF's ``lda,pw`` (Slater + PW92), the LDA of ``mofdft solve --xc``."""
    import json

    assert main(["ks", str(water_xyz), *CHEAP, "--xc", "lda", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["converged"] and data["settings"]["xc"] == "lda,pw"


# --- row 2: solve --functional PATH -----------------------------------------------------------

@pytest.mark.parametrize("value", ["/no/such.eqx", "no_such.json", "./missing", "~/nope.eqx"])
def test_solve_missing_checkpoint_path(water_xyz, capsys, value):
    line = assert_refused(capsys, ["solve", str(water_xyz), "--functional", value], 2,
                          prefix="error:")
    assert line == f"error: no such checkpoint: {value}"


def test_solve_weights_without_metadata(water_xyz, tmp_path, capsys):
    (tmp_path / "model.eqx").write_bytes(b"")
    assert_refused(capsys, ["solve", str(water_xyz), "--functional", str(tmp_path / "model")],
                   2, "no such checkpoint", "model.json is missing", prefix="error:")


def test_solve_unknown_functional_name_lists_the_names(water_xyz, capsys):
    assert_refused(capsys, ["solve", str(water_xyz), "--functional", "tff"], 2,
                   "'tff' is not one of tf, vw")


# --- row 3: output paths checked before any work ----------------------------------------------

@pytest.mark.parametrize("option", ["--cube", "--trajectory"])
def test_solve_output_into_a_missing_directory(water_xyz, tmp_path, capsys, option):
    other = "--trajectory" if option == "--cube" else "--cube"
    target = tmp_path / "no_such_dir" / "out.file"
    assert_refused(capsys, ["solve", str(water_xyz), *CHEAP, "--functional", "tf",
                            "--steps", "2", option, str(target), other, str(tmp_path / "ok")],
                   2, option, "does not exist", prefix="error:")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the valid path


def test_solve_output_path_is_a_directory(water_xyz, tmp_path, capsys):
    assert_refused(capsys, ["solve", str(water_xyz), "--cube", str(tmp_path)], 2,
                   "--cube", "is a directory", prefix="error:")


# --- row 4: the trajectory buffers are sized before any work ----------------------------------

def test_solve_huge_step_count_is_refused_with_the_memory_estimate(water_xyz, tmp_path, capsys):
    cube = tmp_path / "rho.cube"
    line = assert_refused(capsys, ["solve", str(water_xyz), "--steps", "1000000000000",
                                   "--cube", str(cube)], 2, "--steps 1000000000000",
                          "trajectory buffers", "TiB", "this machine's memory", prefix="error:")
    assert "1099511627776 states" in line  # 2**40, the next power of two
    assert not cube.exists()


def test_solve_max_memory_sets_the_limit(water_xyz, capsys):
    assert_refused(capsys, ["solve", str(water_xyz), "--steps", "10000", "--max-memory",
                            "0.001"], 2, "~2.5 MiB", "of --max-memory", prefix="error:")
    assert_refused(capsys, ["solve", str(water_xyz), "--max-memory", "0"], 2, "--max-memory",
                   "must be a positive number")


@pytest.fixture(scope="module")
def methane_box_xyz(tmp_path_factory):
    """810 methane molecules, 4,050 atoms (the issue's 3,240-atom box, a little larger)."""
    ch4 = [[0, 0, 0], [0.629, 0.629, 0.629], [-0.629, -0.629, 0.629], [-0.629, 0.629, -0.629],
           [0.629, -0.629, -0.629]]
    lines = [f"{s} {x + 3.5 * i:.4f} {y + 3.5 * j:.4f} {z + 3.5 * k:.4f}"
             for i in range(9) for j in range(9) for k in range(10)
             for s, (x, y, z) in zip("CHHHH", ch4)]
    path = tmp_path_factory.mktemp("box") / "box.xyz"
    path.write_text(f"{len(lines)}\nmethane box\n" + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("command", ["solve", "ks"])
def test_a_molecule_too_large_for_the_machine_is_refused_before_any_work(methane_box_xyz,
                                                                        tmp_path, capsys,
                                                                        command):
    """The 4,050-atom box: one line with the estimate and --max-memory, exit 2, within seconds
    (the estimate builds no integral), nothing written."""
    import time

    cube = tmp_path / "rho.cube"
    t0 = time.perf_counter()
    line = assert_refused(capsys, [command, str(methane_box_xyz), "--cube", str(cube)]
                          + (["--steps", "1"] if command == "solve" else []), 2,
                          f"mofdft {command} needs ~", "TiB", "this machine's memory",
                          "--max-memory", "natm 4,050", prefix="error:")
    assert time.perf_counter() - t0 < 60
    assert ("grid basis values" if command == "solve" else "recorded SCF matrices") in line
    assert not cube.exists()


@pytest.mark.parametrize("command", ["solve", "ks"])
def test_the_estimate_is_printed_first_and_max_memory_is_the_limit(water_xyz, capsys, command):
    """The estimate line comes first on stderr (solve: not under --json/--quiet, like its
    progress)."""
    assert main([command, str(water_xyz), *CHEAP]
                + (["--steps", "2"] if command == "solve" else ["--no-forces"])) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"water: mofdft {command} needs ~") and "MiB" in first
    assert_refused(capsys, [command, str(water_xyz), *CHEAP, "--max-memory", "1e-5"], 2,
                   "of --max-memory", "MiB", prefix="error:")


def test_trajectory_estimate_matches_the_buffers():
    """The estimate counts the compiled buffers of :func:`mofdft_jax.solver.solve` (capacity ×
    series × float64) twice: device buffers and the host copy."""
    from mofdft_jax.commands.solve import TRAJECTORY_SERIES, trajectory_buffer_bytes
    from mofdft_jax.solver.optimize import trajectory_capacity

    assert trajectory_capacity(1000) == 1024
    assert trajectory_buffer_bytes(1000) == 1024 * TRAJECTORY_SERIES * 8 * 2
    assert trajectory_buffer_bytes(10**12) == 2**40 * TRAJECTORY_SERIES * 16


# --- row 6: one default initial density for learned functionals -------------------------------

SHIPPED = str(__import__("pathlib").Path(__file__).resolve().parents[1]
              / "mofdft_jax" / "checkpoints" / "ethanol_ts_res")


def test_learned_default_init_is_projminao_in_solve_and_ase(water_xyz, capsys):
    """``mofdft solve --functional CHECKPOINT`` without ``--init`` and the ASE calculator with the
    same checkpoint both start from ProjMINAO; a classical functional from MINAO."""
    import json

    from mofdft_jax.ase_calculator import MOFDFTCalculator
    from mofdft_jax.commands.learned_solve import DEFAULT_LEARNED_INIT, default_init

    assert DEFAULT_LEARNED_INIT == "projminao" == default_init(True)
    assert default_init(False) == "minao"
    assert MOFDFTCalculator(SHIPPED).init == "projminao"
    assert MOFDFTCalculator("tf").init == "minao"

    assert main(["solve", str(water_xyz), "--functional", SHIPPED, "--steps", "0", *CHEAP,
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["init"] == "projminao" and data["initial_guess"]["name"] == "projminao"
    assert main(["solve", str(water_xyz), "--functional", "tf", "--steps", "0", *CHEAP,
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["init"] == "minao"


def test_solve_help_documents_the_default_init(capsys):
    import inspect

    from mofdft_jax.commands.solve import solve_command

    option = inspect.signature(solve_command).parameters["init"].default
    assert option.default is None
    assert "Default: projminao with a checkpoint" in option.help
    assert "ProjMINAO for a learned-functional checkpoint" in " ".join(
        solve_command.__doc__.split())
    assert main(["solve", "--help"]) == 0
    assert "projminao" in capsys.readouterr().out


# --- row 7: progress of a long solve on a non-terminal stderr ---------------------------------

SOLVE_TF = ["--functional", "tf", *CHEAP, "--steps", "50", "--run-all-steps"]


def progress_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": step " in line]


def test_solve_prints_plain_progress_lines_when_stderr_is_not_a_terminal(water_xyz, capsys,
                                                                        monkeypatch):
    """stderr captured (not a TTY): a "compiling" line, the first state, then a line at most
    every PLAIN_PROGRESS_INTERVAL_S seconds and the last state, each with step, E, |P grad E|."""
    import re

    import mofdft_jax.commands.solve as solve_module

    assert main(["solve", str(water_xyz), *SOLVE_TF]) == 0
    err = capsys.readouterr().err
    assert "up to 50 steps (compiling)" in err
    lines = progress_lines(err)
    assert lines[0].startswith("water: tf+pbe sgd: step 0/50  E = ")
    assert lines[-1].startswith("water: tf+pbe sgd: step 50/50  E = ")
    pattern = re.compile(r"step (\d+)/50  E = (-?\d+\.\d{8}) Ha  \|P grad E\| = (\S+)  "
                         r"(\d+\.\d) s$")
    assert all(pattern.search(line) for line in lines), lines
    assert "Traceback" not in err

    # every report (~1 % of the steps, here every state) with a zero interval
    monkeypatch.setattr(solve_module, "PLAIN_PROGRESS_INTERVAL_S", 0.0)
    assert main(["solve", str(water_xyz), *SOLVE_TF]) == 0
    steps = [int(re.search(r"step (\d+)/", line).group(1))
             for line in progress_lines(capsys.readouterr().err)]
    assert steps == list(range(51))


@pytest.mark.parametrize("flag", ["--json", "--quiet"])
def test_solve_progress_is_absent_under_json_and_quiet(water_xyz, capsys, flag):
    import json

    assert main(["solve", str(water_xyz), *SOLVE_TF, flag]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    if flag == "--json":
        assert json.loads(captured.out)["n_steps"] == 50  # stdout is the one JSON object


def test_plain_progress_is_silent_on_a_terminal():
    """On a terminal the rich bar shows the progress; no plain lines are printed."""
    import io

    from rich.console import Console

    from mofdft_jax.commands.solve import PlainProgress

    tty = Console(file=io.StringIO(), force_terminal=True)
    reporter = PlainProgress(tty, "x", 10, interval_s=0.0)
    reporter(0, -1.0, 1.0)
    reporter.flush()
    assert not reporter.active and tty.file.getvalue() == ""
    pipe = Console(file=io.StringIO(), force_terminal=False)
    reporter = PlainProgress(pipe, "x", 10, interval_s=1e9)
    for step in range(11):
        reporter(step, -1.0, 1.0)
    reporter.flush()
    assert [line.split("  ")[0] for line in pipe.file.getvalue().splitlines()] == [
        "x: up to 10 steps (compiling)", "x: step 0/10", "x: step 10/10"]


# --- mofdft train: held-out elements the training split lacks --------------------------------

def _dataset_with_formulas(directory, train_formula: str, val_formula: str):
    """A dataset manifest of two molecules split 1:1 into train and val, whose formulas make the
    val molecule ``val_formula`` (no shard is read before the check, so none is written)."""
    import json

    from mofdft_jax.data.shards import DATASET_FORMAT, MANIFEST_NAME, SCHEMA_VERSION
    from mofdft_jax.data.splits import make_splits

    files = ["000000_a.h5", "000001_b.h5"]

    def write(formulas):
        manifest = {"format": DATASET_FORMAT, "schema_version": SCHEMA_VERSION,
                    "recipe": {"name": "tripup", "splits": {"fractions": [1, 1], "seed": 0}},
                    "label_settings": {}, "failures": {},
                    "molecules": [{"index": i, "name": f[7:-3], "formula": formulas[f],
                                   "natm": 3, "file": f} for i, f in enumerate(files)],
                    "shards": {f: {"index": i, "file": f, "n_steps": 1}
                               for i, f in enumerate(files)}}
        (directory / MANIFEST_NAME).write_text(json.dumps(manifest))

    directory.mkdir()
    write({f: "CH4" for f in files})
    splits = make_splits(directory)
    assert len(splits["train"]) == len(splits["val"]) == 1
    write({splits["train"][0]: train_formula, splits["val"][0]: val_formula})
    return directory, splits["val"][0]


def test_train_refuses_a_val_split_with_elements_absent_from_training(tmp_path, capsys):
    data, val_file = _dataset_with_formulas(tmp_path / "data", "CH4", "C2H3FO")
    out = tmp_path / "out"
    out.mkdir()
    line = assert_refused(capsys, ["train", "--data", str(data), "--out", str(out / "m"),
                                   "--config", "tiny"], 2,
                          "val split", "elements O, F absent from the train split", val_file,
                          prefix="error:")
    assert "train has H, C" in line and "recipe's splits table" in line
    assert line.endswith("(--allow-unseen-elements trains anyway)")
    assert list(out.iterdir()) == []


# --- atoms far apart: fragments ---------------------------------------------------------------

TWO_WATERS_500 = ("6\ntwo waters 500 A apart\n" + "\n".join(WATER_XYZ.splitlines()[2:]) + "\n"
                  + "\n".join(f"{e} {float(x) + 500:.4f} {y} {z}" for e, x, y, z in
                              (line.split() for line in WATER_XYZ.splitlines()[2:])) + "\n")


SHIPPED = str(__import__("pathlib").Path(__import__("mofdft_jax").__file__).parent
              / "checkpoints" / "ethanol_ts_res")


@pytest.mark.parametrize("command", [["ks"], ["solve", "--functional", "tf", "--steps", "1"],
                                     ["solve", "--functional", SHIPPED, "--steps", "1"]])
def test_fragments_far_apart_are_refused(tmp_path, capsys, command):
    path = tmp_path / "two_waters.xyz"
    path.write_text(TWO_WATERS_500)
    cube = tmp_path / "rho.cube"
    extra = ["--cube", str(cube)] if command[0] == "solve" else []
    assert_refused(capsys, [command[0], str(path), *command[1:], *CHEAP, *extra], 2,
                   f"{path}: 2 fragments more than 10 Angstrom apart", "H2O (3 atoms), H2O "
                   "(3 atoms)", "atom 0 (O) and atom 3 (O) are 500.000 Angstrom apart",
                   prefix="error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two_waters.xyz"]


def test_fragment_check_keeps_complexes_and_documents_the_cutoff():
    """A hydrogen-bonded water dimer (O-O 2.9 A) and a pair 9 A apart are one system; 11 A apart
    is two."""
    import numpy as np

    from mofdft_jax.molecules import InputError, Molecule
    from mofdft_jax.molecules.validate import MAX_FRAGMENT_GAP_ANGSTROM, check_fragments

    assert MAX_FRAGMENT_GAP_ANGSTROM == 10.0
    water = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])
    for shift, one in ((2.9, True), (9.0 + 0.7572 * 2, True), (11.0 + 0.7572 * 2, False)):
        coords = np.vstack([water, water + [0.0, shift, 0.0]])
        mol = Molecule.from_angstrom([8, 1, 1, 8, 1, 1], coords, name="dimer")
        if one:
            assert check_fragments(mol) is mol
        else:
            with pytest.raises(InputError, match="2 fragments"):
                check_fragments(mol)


# --- charged and open-shell input: messages name the CLI's options; --charge ------------------

H3O_XYZ = ("4\nhydronium charge=1\nO 0 0 0.06\nH 0 0.94 -0.25\nH 0.81 -0.47 -0.25\n"
           "H -0.81 -0.47 -0.25\n")
OH_XYZ = "2\nhydroxide\nO 0 0 0\nH 0 0 0.97\n"


@pytest.mark.parametrize("command", ["ks", "solve"])
@pytest.mark.parametrize("text, charge, needles", [
    (H3O_XYZ, None, ["total charge +1", "(run it anyway with --charge +1)"]),
    (OH_XYZ, None, ["open shell, 9 electrons (odd)", "have no --spin", "with --charge)"]),
    (WATER_XYZ, "1", ["open shell, 9 electrons (odd)", "with --charge)"]),
])
def test_charge_and_open_shell_refusals_name_the_cli_options(tmp_path, capsys, command, text,
                                                             charge, needles):
    path = tmp_path / "mol.xyz"
    path.write_text(text)
    args = [command, str(path), *CHEAP, *(["--charge", charge] if charge else [])]
    line = assert_refused(capsys, args, 2, f"{path}: ", *needles, prefix="error:")
    assert "allow_" not in line and "=True" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mol.xyz"]


def test_charge_option_runs_a_closed_shell_ion(tmp_path, capsys):
    """--charge replaces the file's charge: KS of H3O+ and OFDFT of OH- with 10 electrons."""
    import json

    h3o, oh = tmp_path / "h3o.xyz", tmp_path / "oh.xyz"
    h3o.write_text(H3O_XYZ)
    oh.write_text(OH_XYZ)
    assert main(["ks", str(h3o), *CHEAP, "--charge", "1", "--json"]) == 0
    ks = json.loads(capsys.readouterr().out)
    assert ks["charge"] == 1 and ks["n_electrons"] == 10 and ks["converged"]
    assert main(["solve", str(oh), *CHEAP, "--functional", "tf", "--steps", "3", "--charge", "-1",
                 "--json"]) == 0
    solved = json.loads(capsys.readouterr().out)
    assert solved["charge"] == -1 and solved["n_electrons"] == 10.0
    assert solved["electron_count"] == pytest.approx(10.0, abs=1e-8)


# --- mofdft reproduce --list / mofdft datagen --list --------------------------------------------

@pytest.mark.parametrize("command", ["reproduce", "datagen"])
def test_list_prints_the_registry_and_exits_0(capsys, command):
    """``--list`` needs no other argument (not even datagen's required RECIPE and --out), prints
    one line per registry entry with its presets, and exits 0."""
    import re

    from mofdft_jax.data.recipes import recipe_catalogue
    from reproduce.runner import EXPERIMENTS

    assert main([command, "--list"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    names = list(EXPERIMENTS) if command == "reproduce" else [r["name"] for r in
                                                              recipe_catalogue()]
    assert len(names) >= 8 and (command == "reproduce" or "smoke" in names)
    assert [line.split()[0] for line in lines[:-1]] == names
    assert all(re.search(r"  \[(quick|cpu|paper)", line) for line in lines[:-1])
    assert lines[-1].startswith("(")


# --- help: boolean flags are plain flags ------------------------------------------------------

def test_help_renders_boolean_flags_as_plain_flags(capsys):
    """No ``--json <bool>``: every command's help lists its flags without a value type (click's
    plain formatter, rich_markup_mode=None)."""
    import re

    from mofdft_jax.commands import COMMANDS

    for name, _ in COMMANDS:
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert "<bool>" not in out, name
        assert re.search(r"^  --help +Show this message and exit\.$", out, re.M), name
        if "--json" in out:
            assert re.search(r"^  --json +\S", out, re.M), name


# -- Ctrl-C: exit 130 within a second, nothing half-written --------------------------------------

def _start_cli(args, tmp_path):
    """``python -m mofdft_jax.cli ARGS`` in a new process group, stderr piped (plain lines)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "mofdft_jax.cli", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)


def _interrupt_when(proc, needle: str, timeout_s: float = 240.0,
                    delay_s: float = 0.0) -> tuple[float, str]:
    """Read stderr until a line contains ``needle``, wait ``delay_s``, send SIGINT; return
    (seconds from the signal to the exit, all of stderr)."""
    import os
    import signal
    import time

    deadline = time.monotonic() + timeout_s
    seen = []
    for raw in iter(proc.stderr.readline, b""):
        seen.append(raw.decode(errors="replace"))
        if needle in seen[-1]:
            break
        assert time.monotonic() < deadline, "".join(seen)[-2000:]
    else:
        raise AssertionError("process ended before " + repr(needle) + ": " + "".join(seen))
    time.sleep(delay_s)
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return time.monotonic() - t0, "".join(seen) + proc.stderr.read().decode(errors="replace")


@pytest.mark.parametrize("needle", ["(compiling)", "step "])
def test_ctrl_c_during_solve_exits_130_at_once_and_writes_nothing(water_xyz, tmp_path, needle):
    """SIGINT while the solve compiles and while it runs inside XLA: status 130 within a second,
    one 'interrupted' line, no traceback, no trajectory/cube file (nor a temporary one)."""
    out = tmp_path / "out"
    out.mkdir()
    proc = _start_cli(["solve", str(water_xyz), "--functional", "tf+1/9vw", "--steps", "200000",
                       "--run-all-steps", "--basis", "sto-3g", "--grid-level", "0",
                       "--trajectory", str(out / "traj.csv"), "--cube", str(out / "rho.cube")],
                      tmp_path)
    wall_s, err = _interrupt_when(proc, needle)
    assert proc.returncode == 130, err[-2000:]
    assert wall_s < 1.0, wall_s
    assert "interrupted" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_ctrl_c_during_ks_exits_130_at_once(tmp_path):
    """SIGINT during the SCF of ``mofdft ks`` (PySCF in C; 2 s after the size line, the SCF of
    octane/cc-pVDZ takes ~20 s): status 130 within a second."""
    proc = _start_cli(["ks", "smiles:CCCCCCCC", "--basis", "cc-pvdz", "--max-cycle", "200"],
                      tmp_path)
    wall_s, err = _interrupt_when(proc, "mofdft ks needs ~", delay_s=2.0)
    assert proc.returncode == 130, err[-2000:]
    assert wall_s < 1.0, wall_s
    assert "interrupted" in err and "Traceback" not in err


def test_interrupt_watcher_ignores_other_signals_and_exits_on_sigint():
    """Python writes every handled signal's number to the wakeup fd: a SIGUSR1 (with a handler)
    must not end the process, SIGINT must (status 130, one line)."""
    import subprocess
    import sys

    code = ("import os, signal, time\n"
            "from mofdft_jax.commands.interrupt import exit_on_interrupt\n"
            "signal.signal(signal.SIGUSR1, lambda *a: None)\n"
            "with exit_on_interrupt():\n"
            "    os.kill(os.getpid(), signal.SIGUSR1)\n"
            "    time.sleep(0.3)\n"
            "    print('survived', flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(10)\n"
            "    print('not reached', flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 130 and proc.stdout == "survived\n", (proc.stdout, proc.stderr)
    assert proc.stderr.strip() == "interrupted (Ctrl-C): nothing written"

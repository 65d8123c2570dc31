"""`mofdft datagen`: resumable after SIGKILL with an identical result, failures reported with their
reason, manifest/settings guards, JSON summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mofdft_jax.cli import main as cli_main
from mofdft_jax.data import shards
from mofdft_jax.data.generate import generate_dataset
from mofdft_jax.data.recipes import load_recipe, recipe_tasks

SUMMARY_KEYS = {"out_dir", "recipe", "preset", "molecules_total", "molecules_done",
                "molecules_skipped", "molecules_failed", "labelled_steps", "labelled_steps_new",
                "failures", "wall_s", "labels_per_min", "shard_bytes_total",
                "shard_bytes_per_molecule", "workers", "scheduler", "adopted_shards",
                "removed_temporaries"}


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    return env


def _datagen_cmd(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mofdft_jax.cli", "datagen", "smoke", "--out", str(out),
            "--json", *args]


def _run_datagen(out: Path, *args: str) -> dict:
    proc = subprocess.run(_datagen_cmd(out, *args), env=_env(), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _shard_files(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if shards.is_shard_file_name(n))


def _kill_after_first_shard(out: Path, *args: str, timeout_s: float = 600.0) -> list[str]:
    """Start a datagen run in its own process group, SIGKILL the whole group as soon as the first
    shard appears, and return the shards that exist after the kill."""
    proc = subprocess.Popen(_datagen_cmd(out, *args), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if out.exists() and _shard_files(out):
                break
            assert proc.poll() is None, "datagen ended before writing its first shard"
            time.sleep(0.02)
        else:
            pytest.fail("no shard appeared before the timeout")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and every Dask process it started
        proc.wait(timeout=60)
    return _shard_files(out)


def _assert_same_dataset(a: Path, b: Path) -> None:
    files = _shard_files(a)
    assert files == _shard_files(b)
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = shards.read_manifest(a), shards.read_manifest(b)
    for key in ("label_settings", "molecules", "molecules_fingerprint", "settings_hash"):
        assert ma[key] == mb[key]
    strip = lambda m: {f: {k: v for k, v in e.items() if k != "wall_s"}  # noqa: E731
                       for f, e in m["shards"].items()}
    assert strip(ma) == strip(mb)
    assert ma["failures"] == mb["failures"] == {}
    assert shards.verify_dataset(a)["shards"] == len(files)


def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path):
    """Fast version (in-process labelling, two molecules): kill after the first shard, rerun."""
    reference = _run_datagen(tmp_path / "ref", "--workers", "0", "--limit", "2")
    assert SUMMARY_KEYS <= set(reference)
    assert reference["molecules_done"] == 2 and reference["molecules_failed"] == 0
    assert reference["labelled_steps"] == reference["labelled_steps_new"] > 2

    out = tmp_path / "run"
    survivors = _kill_after_first_shard(out, "--workers", "0", "--limit", "2")
    assert survivors == ["000000_water.h5"]  # the run was really interrupted
    leftovers = [n for n in os.listdir(out) if n.startswith(".") and ".tmp-" in n]
    shards.read_shard(out / survivors[0])  # what is visible is complete

    resumed = _run_datagen(out, "--workers", "0", "--limit", "2")
    assert resumed["molecules_done"] == 1 and resumed["molecules_skipped"] == 1, resumed
    assert resumed["removed_temporaries"] == len(leftovers)
    assert resumed["labelled_steps"] == reference["labelled_steps"]
    assert not [n for n in os.listdir(out) if ".tmp-" in n]
    _assert_same_dataset(out, tmp_path / "ref")

    again = _run_datagen(out, "--workers", "0", "--limit", "2")
    assert again["molecules_done"] == 0 and again["molecules_skipped"] == 2


@pytest.mark.slow
def test_sigkill_dask_run_then_rerun_equals_uninterrupted_run(tmp_path):
    """Full version: Dask LocalCluster, whole recipe, killed with one worker, resumed with two,
    compared with an uninterrupted two-worker run (identical bytes whatever the worker count)."""
    reference = _run_datagen(tmp_path / "ref", "--workers", "2")
    assert reference["molecules_done"] == 6
    out = tmp_path / "run"
    survivors = _kill_after_first_shard(out, "--workers", "1")
    assert 1 <= len(survivors) < 6
    resumed = _run_datagen(out, "--workers", "2")
    assert resumed["molecules_done"] == 6 - len(survivors)
    _assert_same_dataset(out, tmp_path / "ref")


def _raise_for_methane(molecule, settings):
    from mofdft_jax.qchem.labels import compute_labels

    if molecule.name == "methane":
        raise FloatingPointError("density matrix became NaN")
    return compute_labels(molecule, settings)


def test_failures_are_recorded_with_reason_and_do_not_stop_the_run(tmp_path):
    recipe = load_recipe("smoke", "quick")
    tasks = recipe_tasks(recipe)[:2]  # water, methane
    settings = recipe.label_settings()
    summary = generate_dataset(tasks, settings, tmp_path, recipe=recipe.to_dict(), workers=0,
                               compute_fn=_raise_for_methane, progress=False)
    assert summary.molecules_done == 1 and summary.molecules_failed == 1
    (failure,) = summary.failures
    assert failure["name"] == "methane" and failure["kind"] == "error"
    assert failure["reason"].startswith("FloatingPointError: density matrix became NaN (at ")
    assert _shard_files(tmp_path) == ["000000_water.h5"]
    manifest = shards.read_manifest(tmp_path)
    assert manifest["failures"]["000001_methane.h5"]["retry"] is True

    # an exception is retried by the next run; here it fails again and stays recorded
    again = generate_dataset(tasks, settings, tmp_path, recipe=recipe.to_dict(), workers=0,
                             compute_fn=_raise_for_methane, progress=False)
    assert again.molecules_skipped == 1 and again.molecules_failed == 1
    assert again.molecules_done == 0


def test_unconverged_scf_is_a_recorded_failure_not_retried(tmp_path):
    recipe = load_recipe("smoke", "quick")
    tasks = recipe_tasks(recipe)[:1]
    settings = recipe.label_settings().replace(max_cycle=2)
    summary = generate_dataset(tasks, settings, tmp_path, recipe=recipe.to_dict(), workers=0,
                               progress=False)
    (failure,) = summary.failures
    assert failure["kind"] == "not_converged"
    assert failure["reason"].startswith("SCF not converged after ")
    assert _shard_files(tmp_path) == []
    rerun = generate_dataset(tasks, settings, tmp_path, recipe=recipe.to_dict(), workers=0,
                             progress=False)
    assert rerun.molecules_skipped == 1 and rerun.molecules_done == 0  # deterministic: not redone


def test_rerun_with_other_settings_or_foreign_shard_is_refused(tmp_path, capsys):
    recipe = load_recipe("smoke", "quick")
    generate_dataset(recipe_tasks(recipe), recipe.label_settings(), tmp_path,
                     recipe=recipe.to_dict(), workers=0, limit=0, progress=False)
    assert shards.read_manifest(tmp_path)["label_settings"]["basis"] == "sto-3g"

    code = cli_main(["datagen", "smoke", "--out", str(tmp_path), "--preset", "cpu", "--limit", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "manifest.json: dataset was made with different label settings (basis: " in err

    (tmp_path / "000099_intruder.h5").write_bytes(b"not a shard")
    code = cli_main(["datagen", "smoke", "--out", str(tmp_path), "--limit", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "000099_intruder.h5: shard is not one of this recipe's molecules" in err
    (tmp_path / "000099_intruder.h5").unlink()

    (tmp_path / "000001_methane.h5").write_bytes(b"\x89HDF garbage")
    code = cli_main(["datagen", "smoke", "--out", str(tmp_path), "--limit", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "000001_methane.h5: not a readable HDF5 shard" in err


def test_second_writer_is_locked_out(tmp_path):
    from mofdft_jax.data.generate import dataset_lock
    from mofdft_jax.data.shards import DatasetError

    with dataset_lock(tmp_path):
        recipe = load_recipe("smoke", "quick")
        with pytest.raises(DatasetError, match="another `mofdft datagen` run is writing"):
            generate_dataset(recipe_tasks(recipe), recipe.label_settings(), tmp_path,
                             workers=0, limit=0, progress=False)


def test_pyscf_memory_fits_the_worker_limit():
    from mofdft_jax.data.generate import fit_memory_setting
    from mofdft_jax.qchem.labels import PAPER_SETTINGS

    assert PAPER_SETTINGS.max_memory_mb == 16000
    fitted = fit_memory_setting(PAPER_SETTINGS, 4 * 2**30)  # a 4 GiB worker
    assert fitted.max_memory_mb == int(0.6 * 4 * 1024)
    assert fitted.replace(max_memory_mb=16000) == PAPER_SETTINGS  # nothing else changes
    assert fit_memory_setting(PAPER_SETTINGS, 64 * 2**30) is PAPER_SETTINGS
    assert fit_memory_setting(PAPER_SETTINGS, None) is PAPER_SETTINGS


def test_existing_scheduler_address(tmp_path):
    """--scheduler: tasks go to an already running cluster (here an in-process one) whose workers
    write the shards; PySCF memory is fitted to that cluster's worker limit."""
    from distributed import LocalCluster

    recipe = load_recipe("smoke", "quick")
    tasks = recipe_tasks(recipe)[3:4]  # hydrogen fluoride
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, memory_limit="2GiB",
                      dashboard_address=None,
                      scheduler_kwargs={"dashboard": False,
                                        "dashboard_address": "127.0.0.1:0"}) as cluster:
        summary = generate_dataset(tasks, recipe.label_settings(), tmp_path,
                                   recipe=recipe.to_dict(), scheduler=cluster.scheduler_address,
                                   progress=False)
    assert summary.molecules_done == 1 and summary.workers == 1
    assert summary.scheduler == cluster.scheduler_address
    labels = shards.read_shard(tmp_path / "000003_hydrogen_fluoride.h5")
    assert labels.converged and "max_memory_mb" not in labels.settings
    assert labels.molecule.formula == "HF"


def test_human_summary(tmp_path, capsys):
    code = cli_main(["datagen", "smoke", "--out", str(tmp_path), "--limit", "0", "--workers", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "datagen smoke (quick)" in out and "0 labelled now" in out
    manifest = shards.read_manifest(tmp_path)
    assert len(manifest["molecules"]) == 6 and manifest["shards"] == {}

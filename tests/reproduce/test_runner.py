"""Skip-if-done of `mofdft reproduce`: only the same config *and* the same code count as done."""

import json

from reproduce import runner
from reproduce.common import git_commit


def _write_info(ctx, experiment, config, commit):
    folder = ctx.out_dir / experiment
    folder.mkdir(parents=True)
    (folder / "run_info.json").write_text(json.dumps(
        {"config_hash": runner.config_hash(config, ctx.preset, ctx.seed), "git_commit": commit}))


def test_results_of_other_code_are_recomputed(tmp_path):
    """Committed results from an older commit (or from a container without git) are not reused;
    the same commit, dirty or not, is."""
    config = {"steps": 10}
    current = git_commit()
    clean = current.removesuffix("-dirty") if current else None
    cases = [(clean, True), ((clean or "x") + "-dirty", clean is not None), ("0" * 40, False),
             (None, current is None)]
    for i, (commit, done) in enumerate(cases):
        ctx = runner.RunContext(preset="quick", out_dir=tmp_path / str(i), cache_dir=tmp_path)
        _write_info(ctx, "scaling", config, commit)
        assert runner.is_done(ctx, "scaling", config) is done, commit
        assert not runner.is_done(ctx, "scaling", {"steps": 11})


def test_cli_runs_each_experiment_in_its_own_process_and_resumes(tmp_path, monkeypatch, capfd):
    """`mofdft reproduce A B` runs A and B as child processes (`--in-process`), a failing one
    does not stop the other (exit code 1 at the end), and a rerun skips what finished."""
    import subprocess
    import sys

    from mofdft_jax.cli import main
    import importlib

    command = importlib.import_module("mofdft_jax.commands.reproduce")

    calls, real_run, commit = [], subprocess.run, git_commit()

    def fake_run(cmd, stdout=None, **kwargs):
        if "mofdft_jax.cli" not in cmd:
            return real_run(cmd, stdout=stdout, **kwargs)
        calls.append(cmd)
        name = cmd[cmd.index("reproduce") + 1]
        if name == "scaling":
            return subprocess.CompletedProcess(cmd, 3)
        out = tmp_path / "out" / name
        out.mkdir(parents=True)
        config = runner.load_config(name, "quick")
        ctx = runner.RunContext(preset="quick", out_dir=tmp_path / "out", cache_dir=tmp_path)
        (out / "run_info.json").write_text(json.dumps(
            {"config_hash": runner.config_hash(config, "quick", 0), "git_commit": commit}))
        assert runner.is_done(ctx, name, config)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    args = ["reproduce", "scaling", "protein_speedup", "--preset", "quick", "--out",
            str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--no-verify", "--json"]
    assert main(args) == 1
    stdout = capfd.readouterr().out
    assert [c[c.index("reproduce") + 1] for c in calls] == ["scaling", "protein_speedup"]
    assert all(c[0] == sys.executable and "--in-process" in c for c in calls)
    summary = json.loads(stdout[stdout.index("{"):])
    assert summary["scaling"]["status"] == "failed" and summary["scaling"]["exit_code"] == 3
    assert summary["protein_speedup"]["status"] == "done"
    calls.clear()
    assert main(args) == 1
    stdout = capfd.readouterr().out
    assert [c[c.index("reproduce") + 1] for c in calls] == ["scaling"]
    assert json.loads(stdout[stdout.index("{"):])["protein_speedup"]["status"] == "cached"
    assert command._run_isolated.__doc__


def test_compilation_cache_is_switched_on_for_a_folder(tmp_path):
    """enable_compilation_cache points JAX's persistent cache at the folder (created)."""
    import jax

    from mofdft_jax.config import enable_compilation_cache

    before = jax.config.jax_compilation_cache_dir
    try:
        enable_compilation_cache(tmp_path / "xla", min_compile_time_s=2.0)
        assert (tmp_path / "xla").is_dir()
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.0
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_keep_freed_memory_applies_on_glibc():
    """keep_freed_memory switches glibc's mmap off (True on Linux/glibc); large arrays allocated
    afterwards behave as before. In a child process: the setting lasts for the process."""
    import subprocess
    import sys

    code = ("import numpy as np; from mofdft_jax.config import keep_freed_memory; "
            "ok = keep_freed_memory(); a = np.ones((16, 1024, 1024)); s = float(a.sum()); "
            "del a; b = np.zeros((16, 1024, 1024)); print(ok, s, bool(b.any()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[1:] == [str(16.0 * 1024 * 1024), "False"]
    if sys.platform.startswith("linux"):
        assert out[0] == "True"

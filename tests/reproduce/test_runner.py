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

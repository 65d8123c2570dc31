"""Runs experiments: presets, configs, caching of finished experiments, the experiment registry.

Resumability (DESIGN.md presets): labels and checkpoints are cached under ``ctx.cache_dir`` by
the experiments themselves (``mofdft datagen`` / ``mofdft train`` are resumable); a finished
experiment leaves ``<out>/<experiment>/run_info.json`` with a ``config_hash`` and is skipped when
rerun with the same preset, seed, config and git commit unless ``force`` is set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import tomllib
from pathlib import Path

from reproduce.common import PRESETS, git_commit

#: Experiments in the order ``mofdft reproduce`` runs them (module names under ``reproduce/``).
EXPERIMENTS: tuple[str, ...] = ("accuracy_in_scale", "density_quality", "ablation",
                                "extrapolation", "peptide_extrapolation", "pes_geometry",
                                "scaling", "protein_speedup")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def default_cache_dir() -> Path:
    """``$MOFDFT_CACHE`` or ``~/.cache/mofdft_jax``: labels, datasets, trained checkpoints."""
    return Path(os.environ.get("MOFDFT_CACHE", Path.home() / ".cache" / "mofdft_jax"))


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What an experiment needs to know about the run it is part of."""

    preset: str
    out_dir: Path
    cache_dir: Path
    seed: int = 0
    workers: int | None = None
    force: bool = False
    progress: bool = True

    @property
    def preset_cache(self) -> Path:
        """Cache folder of this preset (datasets and checkpoints are shared between experiments)."""
        return self.cache_dir / self.preset


def load_config(experiment: str, preset: str) -> dict:
    """The ``[preset]`` table of ``reproduce/configs/<experiment>.toml`` merged over ``[common]``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    path = CONFIG_DIR / f"{experiment}.toml"
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    if preset not in data:
        raise ValueError(f"{path}: no [{preset}] section")
    return {**data.get("common", {}), **data[preset]}


def config_hash(config: dict, preset: str, seed: int) -> str:
    """Hash of what determines an experiment's numbers (for skip-if-done)."""
    blob = json.dumps({"config": config, "preset": preset, "seed": seed}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_done(ctx: RunContext, experiment: str, config: dict) -> bool:
    """Whether ``experiment`` already finished with this preset, seed, config and code commit."""
    info = ctx.out_dir / experiment / "run_info.json"
    if ctx.force or not info.exists():
        return False
    try:
        data = json.loads(info.read_text())
    except (OSError, ValueError):
        return False
    if data.get("config_hash") != config_hash(config, ctx.preset, ctx.seed):
        return False
    # same code too: results committed from another commit (or a container without git, where
    # the commit is unknown) are recomputed, not silently reused; "-dirty" is ignored because
    # writing results into a tracked folder dirties the tree during the run itself
    return _code_id(data.get("git_commit")) == _code_id(git_commit())


def _code_id(commit: str | None) -> str | None:
    return commit.removesuffix("-dirty") if commit else None


def experiment_catalogue() -> list[dict]:
    """``{"name", "title", "presets"}`` of every experiment in run order: the title is the head of
    its module docstring (up to the first colon), the presets the tables of its config file. Read
    from the files, nothing is imported."""
    import ast

    rows = []
    for name in EXPERIMENTS:
        source = (Path(__file__).resolve().parent / f"{name}.py").read_text()
        doc = (ast.get_docstring(ast.parse(source)) or "").strip()
        title = " ".join(doc.split("\n\n")[0].split()).split(": ")[0].rstrip(".")
        with open(CONFIG_DIR / f"{name}.toml", "rb") as fh:
            tables = tomllib.load(fh)
        rows.append({"name": name, "title": title,
                     "presets": [p for p in PRESETS if p in tables]})
    return rows


def resolve_experiments(names: list[str] | None) -> list[str]:
    """Validate experiment names (``None`` or empty: all, in registry order)."""
    if not names:
        return list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}; "
                         f"available: {', '.join(EXPERIMENTS)}")
    return names


def run_experiment(name: str, ctx: RunContext) -> Path:
    """Import ``reproduce.<name>`` and run it."""
    module = importlib.import_module(f"reproduce.{name}")
    return module.run(ctx)

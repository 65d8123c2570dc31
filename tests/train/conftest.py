"""Shared fixtures of the training tests: a real two-molecule labelled dataset (water and methane,
STO-3G, grid level 0: seconds per molecule, physics not meaningful) and a tiny dropout-free model
config, so every test file compiles the training step once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

#: The model every training test uses: ``mofdft train --config tiny --dropout 0`` (one
#: compilation of the train step per process and batch shape).
TEST_MODEL = dict(dropout=0.0, attention_dropout=0.0, output_dropout=0.0)


def make_test_config():
    from mofdft_jax.model.graphormer import make_config

    return make_config("tiny", **TEST_MODEL)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Water + methane labelled with ``mofdft datagen``'s driver (smoke recipe, quick preset)."""
    from mofdft_jax.data.generate import generate_dataset
    from mofdft_jax.data.recipes import load_recipe, recipe_tasks

    out = tmp_path_factory.mktemp("train_data") / "smoke2"
    recipe = load_recipe("smoke", "quick")
    summary = generate_dataset(recipe_tasks(recipe)[:2], recipe.label_settings(), out,
                               recipe=recipe.to_dict(), workers=0, progress=False)
    assert summary.molecules_done == 2
    return out


@pytest.fixture(scope="session")
def tiny_prepared(tiny_dataset):
    """Both molecules in the training split, water as validation (explicit splits)."""
    from mofdft_jax.data.loader import open_dataset
    from mofdft_jax.data.training_set import prepare_training_data

    files = open_dataset(tiny_dataset).files
    return prepare_training_data(tiny_dataset, target="ts_res",
                                 splits={"train": files, "val": files[:1]})


#: ``mofdft train`` options of the tiny model. The recipe split of the two molecules puts water in
#: train and methane (carbon) in val, which ``mofdft train`` refuses unless told otherwise: the
#: tests only need a validation split, not a meaningful one.
TRAIN = ["--config", "tiny", "--dropout", "0", "--batch-size", "8", "--lr", "1e-3",
         "--allow-unseen-elements"]


@pytest.fixture(scope="session")
def trained(tiny_dataset, tmp_path_factory):
    """A checkpoint trained by the CLI for 2 epochs (target ts_res) on the tiny dataset."""
    from mofdft_jax.cli import main

    out = tmp_path_factory.mktemp("cli") / "water_methane"
    code = main(["train", "--data", str(tiny_dataset), "--out", str(out), "--epochs", "2",
                 "--json", *TRAIN])
    assert code == 0
    return out


sys.path.insert(0, str(Path(__file__).resolve().parent))

"""Adaptive sampling of visited densities (issue 19) end to end on the tiny dataset: ``mofdft
sample-visited`` writes states whose bound constants agree with independent evaluations of the
sampled model in the raw basis, the trainer sees the same T_θ and ∇T_θᵀδ in p′ space, and ``mofdft
train --visited`` trains on them (fingerprint, metrics, resume refusal)."""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TRAIN
from test_train_cli import run_json

from mofdft_jax.cli import main
from mofdft_jax.units import HARTREE_TO_KCAL
from mofdft_jax.workflows.visited import select_visited_steps


def test_select_visited_steps_is_geometric_with_the_last_state():
    assert select_visited_steps(100, 10).tolist() == [0, 1, 2, 4, 8, 16, 32, 64, 99]
    assert select_visited_steps(300, 3).tolist() == [0, 1, 299]
    assert select_visited_steps(1, 5).tolist() == [0]
    assert select_visited_steps(5, 1).tolist() == [4]
    assert select_visited_steps(0, 5).tolist() == []


@pytest.fixture(scope="module")
def sampled(trained, tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("visited") / "round1"
    code = main(["sample-visited", str(trained), "--data", str(tiny_dataset), "--out", str(out),
                 "--splits", "train", "--n", "1", "--steps", "12", "--keep", "4", "--json"])
    assert code == 0
    return out


def test_bounds_agree_with_the_sampled_model_in_the_raw_basis(trained, tiny_dataset, sampled):
    from mofdft_jax.commands.learned_solve import (learned_energy_fn, load_functional,
                                                   prepare_learned_molecule)
    from mofdft_jax.data.loader import open_dataset
    from mofdft_jax.data.training_set import prepare_training_data
    from mofdft_jax.data.visited import read_visited_file, read_visited_manifest
    from mofdft_jax.solver.energy import sum_terms
    from mofdft_jax.train.data import make_training_set
    from mofdft_jax.train.loop import evaluate
    from mofdft_jax.train.losses import LossWeights

    manifest = read_visited_manifest(sampled)
    (file, entry), = manifest["molecules"].items()
    samples = read_visited_file(sampled / entry["file"])
    assert samples.coeffs.shape[0] == entry["n"] == len(samples.steps) <= 4
    assert samples.steps[0] == 0 and np.all(np.isfinite(samples.bounds))

    functional, info = load_functional(trained)
    dataset = open_dataset(tiny_dataset)
    labels = dataset.read(file)
    st = dataset.label_settings
    setup = prepare_learned_molecule(labels.molecule, functional, basis=st["basis"],
                                     grid_level=int(st["grid_level"]), xc="pbe",
                                     with_forces=False)
    energy_terms_fn = learned_energy_fn(functional, "pbe")
    total = jax.jit(jax.value_and_grad(lambda p, x: sum_terms(energy_terms_fn(p, x))))
    model = jax.jit(lambda p, x: functional.energy(p, x.bundle, x.geometry))
    e_ks, p_star = float(labels.ks_energy["e_tot"]), np.asarray(labels.p_ref)
    var, desc = [], []
    for p, (k_var, k_desc, _), err in zip(samples.coeffs, samples.bounds,
                                          samples.energy_error_kcal):
        e, g = total(jnp.asarray(p), setup.inputs)
        t = HARTREE_TO_KCAL * float(model(jnp.asarray(p), setup.inputs))
        assert err == pytest.approx((float(e) - e_ks) * HARTREE_TO_KCAL, abs=1e-6)
        # T_θ ≥ k_var  ⟺  E(p_v) ≥ E_KS;   ∇T_θᵀδ + k_desc = ∇E(p_v)ᵀδ
        assert k_var - t == pytest.approx(-err, abs=1e-6)
        dt = jax.grad(lambda q: functional.energy(q, setup.inputs.bundle,
                                                  setup.inputs.geometry))(jnp.asarray(p))
        total_slope = HARTREE_TO_KCAL * float(g @ (p - p_star))
        assert HARTREE_TO_KCAL * float(dt @ (p - p_star)) + k_desc == pytest.approx(
            total_slope, rel=1e-8, abs=1e-6)
        var.append(max(0.0, -err))
        desc.append(max(0.0, -total_slope))

    # the violations of the sampled model at its own states, as the probe and the loss see them
    from mofdft_jax.workflows.visited import visited_violations
    violations = visited_violations(functional, "pbe", setup.inputs, samples, coeffs_star=p_star)
    assert violations.shape == (len(samples.steps), 3) and np.all(violations >= 0)
    np.testing.assert_allclose(violations[:, 0], var, atol=1e-6)
    np.testing.assert_allclose(violations[:, 1], desc, atol=1e-6)

    # the trainer's p′-space evaluation of the same model on the same rows
    prepared = prepare_training_data(tiny_dataset, target="ts_res", split_names=("train",),
                                     splits={"train": [file]}, visited=[sampled])
    data = make_training_set(prepared.splits["train"])
    assert int(np.sum(data.label_weight == 0)) == len(samples.steps)
    metrics = evaluate(functional, data, weights=LossWeights(bound=1.0))
    assert metrics["n_visited"] == len(samples.steps)
    assert metrics["bound_var_kcal"] == pytest.approx(np.mean(var), abs=1e-6)
    assert metrics["bound_desc_kcal"] == pytest.approx(np.mean(desc), abs=1e-6)
    plain = prepare_training_data(tiny_dataset, target="ts_res", split_names=("train",),
                                  splits={"train": [file]})
    assert plain.fingerprint != prepared.fingerprint
    # labelled metrics are those of the labelled rows only
    labelled = evaluate(functional, make_training_set(plain.splits["train"]),
                        weights=LossWeights(bound=1.0))
    assert metrics["energy_mae_kcal"] == pytest.approx(labelled["energy_mae_kcal"], rel=1e-10)
    assert "n_visited" not in labelled


def test_train_with_visited_and_resampling_guards(trained, tiny_dataset, sampled, tmp_path,
                                                  capsys):
    out = tmp_path / "with_visited"
    code, summary, err = run_json(capsys, ["train", "--data", str(tiny_dataset), "--out",
                                           str(out), "--epochs", "1", "--visited", str(sampled),
                                           "--json", *TRAIN])
    assert code == 0, err
    manifest = json.loads((sampled / "visited.json").read_text())
    assert summary["n_train_visited"] == sum(m["n"] for m in manifest["molecules"].values())
    assert summary["train_config"]["weights"]["bound"] == 1.0
    epoch = json.loads(Path(summary["history_file"]).read_text())["history"][0]
    assert epoch["train_n_visited"] == summary["n_train_visited"]
    assert all(epoch[f"train_bound_{k}_kcal"] >= 0 for k in ("var", "desc", "conv"))
    # resampling into the same directory with other options is refused, rerunning is a no-op
    code, _, err = run_json(capsys, ["sample-visited", str(trained), "--data", str(tiny_dataset),
                                     "--out", str(sampled), "--splits", "train", "--n", "1",
                                     "--steps", "5", "--keep", "4"])
    assert code == 2 and "different steps" in err
    code, again, err = run_json(capsys, ["sample-visited", str(trained), "--data",
                                         str(tiny_dataset), "--out", str(sampled), "--splits",
                                         "train", "--n", "1", "--steps", "12", "--keep", "4",
                                         "--json"])
    assert code == 0 and again["n_new"] == 0, err
    code, _, err = run_json(capsys, ["sample-visited", str(trained), "--data", str(tiny_dataset),
                                     "--out", str(tmp_path / "x"), "--splits", "train,test"])
    assert code == 2 and "test split" in err


def test_init_from_fine_tunes_the_checkpoint_and_refuses_a_mismatch(trained, tiny_dataset,
                                                                    sampled, tmp_path, capsys):
    """``--init-from``: with lr 0 the fine-tuned weights are the checkpoint's, bit for bit, so the
    run starts where the sampled model was (not from a fresh network); a different config is a
    one-line error."""
    from mofdft_jax.model.checkpoint import load_checkpoint

    out = tmp_path / "fine_tuned"
    args = ["train", "--data", str(tiny_dataset), "--out", str(out), "--epochs", "1",
            "--visited", str(sampled), "--init-from", str(trained), "--json", *TRAIN]
    args[args.index("--lr") + 1] = "0"
    code, summary, err = run_json(capsys, args)
    assert code == 0, err
    base, base_info = load_checkpoint(trained)
    tuned, info = load_checkpoint(out)
    leaves = jax.tree.leaves(eqx.filter(base.model, eqx.is_array))
    assert all(np.array_equal(a, b) for a, b in
               zip(leaves, jax.tree.leaves(eqx.filter(tuned.model, eqx.is_array))))
    assert info.extra["init_from"]["checkpoint"] == str(trained)
    fresh_args = [*args[:args.index("--init-from")], *args[args.index("--init-from") + 2:]]
    fresh_args[fresh_args.index("--out") + 1] = str(tmp_path / "fresh")
    fresh_code, fresh, _ = run_json(capsys, fresh_args)
    assert fresh_code == 0
    # same weights, same validation molecules (visited states are train-only): same val error
    base_val = base_info.extra["metrics"]["val_energy_mae_kcal"]
    assert summary["best"]["val_energy_mae_kcal"] == pytest.approx(base_val, rel=1e-9)
    # and not a fresh network: the same run without --init-from fits the training rows otherwise
    assert fresh["best"]["train_energy_mae_kcal"] != pytest.approx(
        summary["best"]["train_energy_mae_kcal"], rel=1e-3)

    # a finished fresh run is not resumed as if it were a fine-tuning one (nor the reverse)
    resumed = [*args]
    resumed[resumed.index("--out") + 1] = str(tmp_path / "fresh")
    code, _, err = run_json(capsys, resumed)
    assert code == 2 and "initial_weights_sha256" in err, err

    bad = [a if a != "tiny" else "small" for a in args]
    bad[bad.index("--out") + 1] = str(tmp_path / "mismatch")
    code, _, err = run_json(capsys, bad)
    assert code != 0 and "does not match" in err and len(err.strip().splitlines()) == 1

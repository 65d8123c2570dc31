"""Device layer: training of the learned functional (spec §3.3).

* :mod:`.losses` — energy L1, projected gradient loss in the rescaled space, Δp loss; the paper's
  loss weights (Table S4);
* :mod:`.data` — labels in the adapter's p′ space, padded batches of different molecules;
* :mod:`.loop` — Adam with warm-up and linear decay, data parallel over local devices, validation,
  early stopping, atomic resumable checkpoints.

The host side (reading shards, building per-molecule adapter geometries) is
:mod:`mofdft_jax.data.training_set`; the CLI is ``mofdft train``.
"""

from mofdft_jax.train.data import (MoleculeData, TrainingSet, epoch_batches, gather_batch,
                                   make_training_set, transform_molecule_labels)
from mofdft_jax.train.losses import (PAPER_LOSS_WEIGHTS, LossWeights, StepInputs, StepLosses,
                                     batch_loss, paper_loss_weights, step_losses)
from mofdft_jax.train.loop import (TRAIN_PRESETS, TrainConfig, TrainResult, TrainStateError,
                                   evaluate, learning_rate, make_optimizer, state_paths, train)

__all__ = [
    "PAPER_LOSS_WEIGHTS", "TRAIN_PRESETS", "LossWeights", "MoleculeData", "StepInputs",
    "StepLosses", "TrainConfig", "TrainResult", "TrainStateError", "TrainingSet", "batch_loss",
    "epoch_batches", "evaluate", "gather_batch", "learning_rate", "make_optimizer",
    "make_training_set", "paper_loss_weights", "state_paths", "step_losses",
    "transform_molecule_labels", "train",
]

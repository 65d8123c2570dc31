"""Host layer: the on-disk dataset (shards + manifest), recipes, resumable distributed label
generation, deterministic splits and the training loader.

* :mod:`~mofdft_jax.data.shards` — one HDF5 shard per molecule, ``manifest.json``, atomic writes,
  errors naming the offending file;
* :mod:`~mofdft_jax.data.recipes` — dataset recipes (``datasets/*.toml``) with presets;
* :mod:`~mofdft_jax.data.sources` — molecule sources of the recipes (SMILES lists, thermal
  conformers, xyz, MD17 ``.npz``, QM9, QMugs, chignolin fragments, proteins);
* :mod:`~mofdft_jax.data.generate` — ``mofdft datagen``: Dask distributed, resumable;
* :mod:`~mofdft_jax.data.splits` — seeded train/val/test splits that never leak a geometry;
* :mod:`~mofdft_jax.data.loader` — labelled SCF steps per molecule for the trainer (filter500,
  ground-state-only ablation).
"""

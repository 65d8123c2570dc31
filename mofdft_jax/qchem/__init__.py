"""Host layer: everything that imports PySCF.

* :mod:`~mofdft_jax.qchem.basis` — orbital basis and the even-tempered density basis (spec §1.4);
* :mod:`~mofdft_jax.qchem.integrals` — W̃, W, w, v_ext, Hellmann–Feynman integrals, the
  :class:`~mofdft_jax.bundle.IntegralBundle` (spec §4.1, §4.6);
* :mod:`~mofdft_jax.qchem.forces` — Hellmann–Feynman forces of fitted densities and of density
  matrices, KS reference forces (spec §4.6);
* :mod:`~mofdft_jax.qchem.grids` — quadrature grids with blocked density-basis values;
* :mod:`~mofdft_jax.qchem.settings` — :class:`LabelSettings` (paper defaults) and presets;
* :mod:`~mofdft_jax.qchem.ksdft` — restricted KS-DFT that records every SCF step and the DIIS
  weights (spec §1.1, §1.3, §1.7);
* :mod:`~mofdft_jax.qchem.fitting` — density fitting of density matrices onto the density basis
  (spec §1.5);
* :mod:`~mofdft_jax.qchem.labels` — per-SCF-step value and gradient labels (spec §1.6–§1.7),
  :class:`MoleculeLabels`, :func:`compute_labels`.
"""

"""Device layer: the learned functional of M-OFDFT (spec §3).

:mod:`.graphormer` (the Graphormer-3D network, configs), :mod:`.functional`
(:class:`~mofdft_jax.model.functional.LearnedFunctional`: adapter + network + target, energy in
Hartree and the ProjMINAO Δp), :mod:`.checkpoint` (atomic save/load with config and statistics).
"""

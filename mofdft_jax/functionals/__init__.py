"""Energy terms of orbital-free DFT as pure JAX functions ``term(coeffs, bundle) -> Hartree``.

Contract (spec §4.1): ``coeffs`` is the ``(naux,)`` density-coefficient vector p in the
even-tempered density basis, ``bundle`` an :class:`~mofdft_jax.bundle.IntegralBundle` (grid terms
read ``bundle.grid``, a :class:`~mofdft_jax.bundle.GridBundle`). Every term is differentiable;
potentials are ``jax.grad`` of the energies. Nothing here imports PySCF or touches files.

* grid-free: :func:`hartree_energy` (½pᵀW̃p), :func:`external_energy` (pᵀv_ext);
* XC on the grid: :data:`XC_FUNCTIONALS` — ``"lda"`` (Slater + PW92), ``"pbe"``;
* classical kinetic on the grid: :data:`KINETIC_FUNCTIONALS` — ``"tf"``, ``"vw"``, ``"tf+1/9vw"``
  (the code's TFVW), ``"tf+vw"`` (the code's TFVW1.1), ``"apbe"``;
* :func:`grid_energy_terms` evaluates a kinetic and an XC functional in one pass over the grid.
"""

from mofdft_jax.functionals.coulomb import (coulomb_matvec, electron_count, external_energy,
                                            hartree_energy)
from mofdft_jax.functionals.grid import (RHO_CUTOFF, SIGMA_CUTOFF, density_on_grid,
                                         electron_count_on_grid, integrate_energy_density,
                                         masked_energy_density)
from mofdft_jax.functionals.kinetic import (KINETIC_ENERGY_DENSITIES,
                                            MASKED_KINETIC_ENERGY_DENSITIES, apbe_energy,
                                            kinetic_energy, thomas_fermi_energy, tf_ninth_vw_energy,
                                            tf_vw_energy, von_weizsaecker_energy)
from mofdft_jax.functionals.terms import grid_energy_terms
from mofdft_jax.functionals.xc import (MASKED_XC_ENERGY_DENSITIES, XC_ENERGY_DENSITIES,
                                       lda_xc_energy, pbe_xc_energy, xc_energy)

#: Classical kinetic functionals ``term(coeffs, bundle) -> Hartree`` by CLI name (spec §6.4 naming).
KINETIC_FUNCTIONALS = {
    "tf": thomas_fermi_energy,
    "vw": von_weizsaecker_energy,
    "tf+1/9vw": tf_ninth_vw_energy,
    "tf+vw": tf_vw_energy,
    "apbe": apbe_energy,
}
#: Exchange-correlation functionals ``term(coeffs, bundle) -> Hartree`` by name.
XC_FUNCTIONALS = {"lda": lda_xc_energy, "pbe": pbe_xc_energy}

__all__ = [
    "KINETIC_FUNCTIONALS", "XC_FUNCTIONALS", "KINETIC_ENERGY_DENSITIES",
    "MASKED_KINETIC_ENERGY_DENSITIES", "XC_ENERGY_DENSITIES", "MASKED_XC_ENERGY_DENSITIES",
    "RHO_CUTOFF", "SIGMA_CUTOFF", "apbe_energy", "coulomb_matvec", "density_on_grid",
    "electron_count", "electron_count_on_grid", "external_energy", "grid_energy_terms",
    "hartree_energy", "integrate_energy_density", "kinetic_energy", "lda_xc_energy",
    "masked_energy_density", "pbe_xc_energy", "thomas_fermi_energy", "tf_ninth_vw_energy",
    "tf_vw_energy", "von_weizsaecker_energy", "xc_energy",
]

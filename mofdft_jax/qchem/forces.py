"""Hellmann–Feynman and KS reference forces on the host (spec §4.6).

The M-OFDFT force of a density is the Hellmann–Feynman force (Pulay terms excluded):

.. math:: f_a = Z_a ∫ ρ(r) (r - R_a)/|r - R_a|³ dr + Σ_{b≠a} Z_a Z_b (R_a - R_b)/|R_a - R_b|³

* of a fitted density ρ_p: :func:`mofdft_jax.qchem.integrals.hf_forces` (2-centre integrals of the
  density basis against point charges; the reference of the paper is this force at p*);
* of a KS density matrix Γ (AO route, used to check the former): with ∂/∂R_a ⟨i|1/|r - R_a||j⟩ =
  ⟨∇i|1/|r - R_a||j⟩ + ⟨i|1/|r - R_a||∇j⟩ (translation invariance), the electronic part is
  2 Z_a Σ_ij Γ_ij ⟨∇i|1/|r - R_a||j⟩ (PySCF ``int1e_iprinv`` with the origin at nucleus a);
* the full analytic KS force (Pulay terms included) from PySCF gradients, for comparison.

All forces are in Ha/Bohr (``units.HA_PER_BOHR_TO_KCAL_PER_ANGSTROM`` converts).
"""

from __future__ import annotations

import numpy as np
from pyscf import gto

from mofdft_jax.qchem.integrals import compute_nuclear_forces, hf_forces


def hf_forces_of_density_matrix(mol: gto.Mole, dm) -> np.ndarray:
    """``(natm, 3)`` Hellmann–Feynman forces of the orbital density Γ (AO route), nuclear included.

    Args:
      mol: orbital-basis molecule.
      dm: ``(nao, nao)`` symmetric density matrix (PySCF convention, trace N with the overlap).
    """
    dm = np.asarray(dm, dtype=np.float64)
    out = compute_nuclear_forces(mol)
    for a in range(mol.natm):
        with mol.with_rinv_at_nucleus(a):
            iprinv = mol.intor("int1e_iprinv", comp=3)  # ⟨∇i|1/|r - R_a||j⟩
        out[a] += 2.0 * mol.atom_charge(a) * np.einsum("xij,ij->x", iprinv, dm)
    return out


def ks_forces(mf) -> np.ndarray:
    """``(natm, 3)`` analytic KS forces -∂E/∂R (Pulay terms included) of a converged PySCF run."""
    from mofdft_jax.qchem.ksdft import to_numpy

    return -to_numpy(mf.nuc_grad_method().kernel())


__all__ = ["compute_nuclear_forces", "hf_forces", "hf_forces_of_density_matrix", "ks_forces"]

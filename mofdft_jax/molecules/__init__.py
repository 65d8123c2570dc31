"""Host layer: molecules from files, SMILES and sequences; validation before expensive work."""

from mofdft_jax.molecules.molecule import InputError, Molecule

__all__ = ["InputError", "Molecule"]

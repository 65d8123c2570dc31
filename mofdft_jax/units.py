"""Physical constants and unit conversions (single source; CODATA 2018 as used by PySCF).

Atomic units (Hartree, Bohr, electron charge) are used everywhere inside the package; a name carries
a unit suffix when it is not atomic (``energy_kcal``, ``coords_angstrom``, ``wall_s``).
"""

from __future__ import annotations

#: 1 Bohr in Angstrom (PySCF ``param.BOHR``).
BOHR_TO_ANGSTROM = 0.52917721092
ANGSTROM_TO_BOHR = 1.0 / BOHR_TO_ANGSTROM
#: 1 Hartree in kcal/mol; the value the M-OFDFT release divides by (spec §2.4).
HARTREE_TO_KCAL = 627.5094740630558
KCAL_TO_HARTREE = 1.0 / HARTREE_TO_KCAL
#: 1 Hartree in eV.
HARTREE_TO_EV = 27.211386245988
#: Force conversion Ha/Bohr -> kcal/mol/Angstrom.
HA_PER_BOHR_TO_KCAL_PER_ANGSTROM = HARTREE_TO_KCAL / BOHR_TO_ANGSTROM
#: Dipole conversion e*Bohr -> Debye.
AU_TO_DEBYE = 2.541746473
#: Elements supported by the density basis and the learned functional (spec §1.1).
SUPPORTED_ELEMENTS = (1, 6, 7, 8, 9)
ELEMENT_SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}
SYMBOL_TO_Z = {v: k for k, v in ELEMENT_SYMBOLS.items()}

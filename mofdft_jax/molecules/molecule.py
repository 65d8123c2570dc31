"""The Molecule record: what every host-side computation starts from.

Coordinates are stored in Bohr (atomic units); readers and writers convert at the user boundary,
where files speak Angstrom.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mofdft_jax.units import ANGSTROM_TO_BOHR, BOHR_TO_ANGSTROM, ELEMENT_SYMBOLS


class InputError(ValueError):
    """Bad user input (file, geometry, element, charge, spin). The message is one clear line that
    names the file, line or atom; the CLI prints it without a traceback."""


@dataclasses.dataclass(frozen=True, eq=False)
class Molecule:
    """A molecule: atomic numbers, coordinates (Bohr), total charge and spin (2S), a name.

    Attributes:
      numbers: ``(natm,)`` int atomic numbers.
      coords_bohr: ``(natm, 3)`` float64 Cartesian coordinates in Bohr.
      charge: total charge (M-OFDFT supports neutral molecules; others need an explicit flag).
      spin: number of unpaired electrons 2S (0 for the closed-shell molecules of the paper).
      name: label used in file names, tables and logs.
      energy_ref: optional reference energy from the source file (e.g. MD17 ``E``), Hartree.
      forces_ref: optional ``(natm, 3)`` reference forces from the source file, Ha/Bohr.
    """

    numbers: np.ndarray
    coords_bohr: np.ndarray
    charge: int = 0
    spin: int = 0
    name: str = "molecule"
    energy_ref: float | None = None
    forces_ref: np.ndarray | None = None

    def __post_init__(self):
        numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        coords = np.asarray(self.coords_bohr, dtype=np.float64).reshape(-1, 3)
        if len(numbers) != len(coords):
            raise InputError(
                f"{self.name}: {len(numbers)} atomic numbers but {len(coords)} coordinate rows"
            )
        object.__setattr__(self, "numbers", numbers)
        object.__setattr__(self, "coords_bohr", coords)

    @classmethod
    def from_angstrom(cls, numbers, coords_angstrom, **kwargs) -> "Molecule":
        """Build a Molecule from coordinates in Angstrom."""
        return cls(numbers, np.asarray(coords_angstrom, dtype=np.float64) * ANGSTROM_TO_BOHR,
                   **kwargs)

    @property
    def coords_angstrom(self) -> np.ndarray:
        """``(natm, 3)`` coordinates in Angstrom."""
        return self.coords_bohr * BOHR_TO_ANGSTROM

    @property
    def natm(self) -> int:
        """Number of atoms."""
        return int(len(self.numbers))

    @property
    def n_electrons(self) -> int:
        """Number of electrons, Σ Z - charge."""
        return int(self.numbers.sum()) - int(self.charge)

    @property
    def n_heavy(self) -> int:
        """Number of non-hydrogen atoms."""
        return int((self.numbers > 1).sum())

    @property
    def symbols(self) -> list[str]:
        """Element symbols (H, C, N, O, F; others as 'Z<n>')."""
        return [ELEMENT_SYMBOLS.get(int(z), f"Z{int(z)}") for z in self.numbers]

    @property
    def formula(self) -> str:
        """Hill formula, e.g. 'C2H6O'."""
        from collections import Counter

        counts = Counter(self.symbols)
        order = [s for s in ("C", "H") if s in counts] + sorted(s for s in counts if s not in "CH")
        return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)

    def with_coords(self, coords_bohr, name: str | None = None) -> "Molecule":
        """A copy with new coordinates (Bohr), same elements, charge and spin."""
        return dataclasses.replace(self, coords_bohr=np.asarray(coords_bohr, dtype=np.float64),
                                   name=self.name if name is None else name,
                                   energy_ref=None, forces_ref=None)

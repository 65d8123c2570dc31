"""Input validation before any expensive work (issue 4, "Molecules"; DESIGN data flow step 1).

M-OFDFT's density basis and learned functional cover H, C, N, O, F only (spec §1.1, §1.4), and the
paper's molecules are neutral and closed-shell. Everything else is refused here with one
:class:`~mofdft_jax.molecules.InputError` line that names the source (file, frame, line) and the
offending atom(s), before PySCF or JAX spends minutes on it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from mofdft_jax.molecules.molecule import InputError, Molecule
from mofdft_jax.units import ANGSTROM_TO_BOHR, BOHR_TO_ANGSTROM, SUPPORTED_ELEMENTS

#: Atoms closer than this (Angstrom) are refused: no bonded pair is shorter (H2: 0.74 A).
MIN_DISTANCE_ANGSTROM = 0.5


#: Atoms are one molecule (or complex) when every atom is linked to the rest through neighbours
#: closer than this (Angstrom). Hydrogen bonds (~2 A) and van der Waals contacts (3-4 A) stay well
#: inside it. At 10 A (19 Bohr) two s Gaussians of exponent 0.1 Bohr^-2 overlap by
#: exp(-0.05 R^2) < 1e-7, so the fragments share practically no density and one SCF / OFDFT of
#: the whole is two separate systems forced to share a single electron count.
MAX_FRAGMENT_GAP_ANGSTROM = 10.0


@dataclasses.dataclass(frozen=True)
class RefusalAdvice:
    """What a refusal of a charged or open-shell molecule tells the user to do.

    Attributes:
      charged: ends the message for a non-zero total charge, in parentheses; ``{charge}`` is
        replaced by the charge (e.g. ``+1``).
      open_shell: ends the message for an odd electron count or 2S > 0.
      pdb_charged: added to the charge refusal of a PDB file (``None``: nothing).
    """

    charged: str
    open_shell: str
    pdb_charged: str | None = None


#: The advice of the Python API (the keyword arguments of :func:`validate_molecule` and readers).
PYTHON_ADVICE = RefusalAdvice(
    charged="pass allow_charged=True to run it anyway",
    open_shell="pass allow_open_shell=True to run it anyway; a charged input may need its charge "
               "set",
    pdb_charged="a protein can be neutralised with add_hydrogens=True")
_ADVICE: contextvars.ContextVar[RefusalAdvice] = contextvars.ContextVar("refusal_advice",
                                                                        default=PYTHON_ADVICE)


@contextlib.contextmanager
def refusal_advice(advice: RefusalAdvice):
    """Within this block, charge and open-shell refusals end with ``advice`` (a command line names
    its own options instead of the Python keyword arguments)."""
    token = _ADVICE.set(advice)
    try:
        yield advice
    finally:
        _ADVICE.reset(token)


def current_refusal_advice() -> RefusalAdvice:
    """The advice in force (:func:`refusal_advice`)."""
    return _ADVICE.get()


def element_symbol(z: int) -> str:
    """Chemical symbol of atomic number ``z`` for any element ('Cl' for 17; 'Z0' for dummies)."""
    from ase.data import chemical_symbols

    z = int(z)
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z{z}"


def atomic_number(symbol: str) -> int | None:
    """Atomic number of a chemical symbol (case-insensitive: 'CL', 'cl', 'Cl'); ``None`` if unknown.

    A plain integer string ('6') is accepted as an atomic number, as some xyz writers emit it.
    """
    from ase.data import atomic_numbers

    s = symbol.strip()
    if s.isdigit():
        z = int(s)
        return z if 0 < z <= 118 else None
    s = s[:1].upper() + s[1:].lower()
    z = atomic_numbers.get(s)
    return int(z) if z else None


def _atom(mol: Molecule, atom_lines: Sequence[int] | None, i: int) -> str:
    """Human locator of atom ``i`` (0-based index, element, file line when known)."""
    line = f", line {atom_lines[i]}" if atom_lines is not None else ""
    return f"atom {i} ({element_symbol(mol.numbers[i])}{line})"


def validate_molecule(
    mol: Molecule,
    *,
    allow_charged: bool = False,
    allow_open_shell: bool = False,
    source: str | None = None,
    atom_lines: Sequence[int] | None = None,
) -> Molecule:
    """Check that ``mol`` is something M-OFDFT can compute; return it unchanged or raise.

    Checks, in order (each failure raises :class:`InputError` with one line):

    1. at least one atom;
    2. every coordinate finite (no NaN or inf);
    3. every element in H, C, N, O, F (``SUPPORTED_ELEMENTS``, spec §1.1);
    4. total charge 0 unless ``allow_charged``;
    5. closed shell (2S = 0, even N_e) unless ``allow_open_shell``; then electron count and spin
       consistent (N_e and 2S of equal parity, 0 <= 2S <= N_e);

    The refusals of 4 and 5 end with the advice of the enclosing :func:`refusal_advice` block
    (default :data:`PYTHON_ADVICE`).
    6. no two atoms closer than ``MIN_DISTANCE_ANGSTROM`` = 0.5 A (pairs found with a k-d tree,
       O(N log N), so 700-atom proteins cost milliseconds).

    Args:
      mol: the molecule.
      allow_charged: accept a non-zero total charge.
      allow_open_shell: accept an odd electron count or 2S > 0.
      source: where the molecule came from ('water.xyz frame 2', 'SMILES CCO'); defaults to
        ``mol.name``. It starts every message.
      atom_lines: optional 1-based file line of each atom, so messages can name the line.

    Returns:
      ``mol`` (so readers can write ``return validate_molecule(mol, ...)``).
    """
    where = source if source is not None else mol.name
    if mol.natm == 0:
        raise InputError(f"{where}: no atoms")
    coords = mol.coords_bohr
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        xyz = ", ".join(f"{v:g}" for v in coords[i] * BOHR_TO_ANGSTROM)
        raise InputError(f"{where}: {_atom(mol, atom_lines, i)} has a non-finite coordinate "
                         f"({xyz}) Angstrom")
    unsupported = ~np.isin(mol.numbers, SUPPORTED_ELEMENTS)
    if unsupported.any():
        i = int(np.flatnonzero(unsupported)[0])
        others = int(unsupported.sum()) - 1
        more = f" (and {others} more unsupported atoms)" if others else ""
        raise InputError(f"{where}: {_atom(mol, atom_lines, i)} is element "
                         f"Z={int(mol.numbers[i])}; M-OFDFT supports H, C, N, O, F only{more}")
    advice = _ADVICE.get()
    if mol.charge != 0 and not allow_charged:
        raise InputError(f"{where}: total charge {mol.charge:+d}; M-OFDFT is trained on neutral "
                         f"molecules ({advice.charged.format(charge=f'{mol.charge:+d}')})")
    n_elec = mol.n_electrons
    if (mol.spin != 0 or n_elec % 2) and not allow_open_shell:
        why = f"{n_elec} electrons (odd)" if n_elec % 2 else f"spin 2S={mol.spin}"
        raise InputError(f"{where}: open shell, {why}; M-OFDFT is trained on closed-shell molecules"
                         f" ({advice.open_shell})")
    if mol.spin < 0 or mol.spin > n_elec or (n_elec - mol.spin) % 2:
        raise InputError(f"{where}: spin 2S={mol.spin} is impossible with {n_elec} electrons "
                         "(2S must have the parity of the electron count; set the spin)")
    if mol.natm > 1:
        pairs = cKDTree(coords).query_pairs(MIN_DISTANCE_ANGSTROM * ANGSTROM_TO_BOHR,
                                            output_type="ndarray")
        if len(pairs):
            d = np.linalg.norm(coords[pairs[:, 0]] - coords[pairs[:, 1]], axis=1)
            k = int(np.argmin(d))
            i, j = sorted(int(a) for a in pairs[k])
            first, second = _atom(mol, atom_lines, i), _atom(mol, atom_lines, j)
            raise InputError(f"{where}: {first} and {second} are {d[k] * BOHR_TO_ANGSTROM:.3f} "
                             f"Angstrom apart (minimum {MIN_DISTANCE_ANGSTROM} Angstrom)")
    return mol


def _hill_formula(numbers) -> str:
    from collections import Counter

    counts = Counter(element_symbol(z) for z in numbers)
    order = [e for e in ("C", "H") if e in counts] + sorted(e for e in counts if e not in "CH")
    return "".join(f"{e}{counts[e] if counts[e] > 1 else ''}" for e in order)


def check_fragments(mol: Molecule, *, source: str | None = None,
                    max_gap_angstrom: float = MAX_FRAGMENT_GAP_ANGSTROM,
                    atom_lines: Sequence[int] | None = None) -> Molecule:
    """Refuse a geometry that falls apart into fragments; return ``mol`` unchanged otherwise.

    The fragments are the connected components of the graph that links atoms closer than
    ``max_gap_angstrom`` (:data:`MAX_FRAGMENT_GAP_ANGSTROM` = 10 A; pairs from a k-d tree,
    components from :func:`scipy.sparse.csgraph.connected_components`). More than one component
    raises :class:`InputError` with one line: the number of fragments, the formula and atom count
    of the first few, and the gap from the fragment of atom 0 to the nearest atom outside it (the
    two atoms named).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    where = source if source is not None else mol.name
    if mol.natm < 2:
        return mol
    coords = mol.coords_bohr
    tree = cKDTree(coords)
    pairs = tree.query_pairs(max_gap_angstrom * ANGSTROM_TO_BOHR, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])) if len(pairs) else
                       ([], ([], [])), shape=(mol.natm, mol.natm))
    n, labels = connected_components(graph, directed=False)
    if n == 1:
        return mol
    first = labels == labels[0]
    inside, outside = np.flatnonzero(first), np.flatnonzero(~first)
    dist, nearest = cKDTree(coords[outside]).query(coords[inside])
    k = int(np.argmin(dist))
    i, j = int(inside[k]), int(outside[int(nearest[k])])
    shown = []
    for c in range(min(n, 3)):
        atoms = np.flatnonzero(labels == c)
        shown.append(f"{_hill_formula(mol.numbers[atoms])} ({len(atoms)} atoms)")
    more = f" and {n - 3} more" if n > 3 else ""
    raise InputError(f"{where}: {n} fragments more than {max_gap_angstrom:g} Angstrom apart: "
                     f"{', '.join(shown)}{more}; {_atom(mol, atom_lines, i)} and "
                     f"{_atom(mol, atom_lines, j)} are {dist[k] * BOHR_TO_ANGSTROM:.3f} Angstrom "
                     "apart (the closest atoms of the first fragment and the rest); compute each "
                     "fragment from its own file")

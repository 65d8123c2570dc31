"""Orbital basis and the even-tempered density (auxiliary) basis of M-OFDFT.

Spec §1.4: the density basis is PySCF's ``df.aug_etb(ref_mol, beta=2.5)`` built once from a fixed
reference molecule holding one H, C, N, O and F atom in the orbital basis (6-31G(2df,p)), so every
element always receives the same shells whatever molecule it sits in:

=======  ===============  ===========
element  shells           functions
=======  ===============  ===========
H        6s3p1d           20
C        11s8p7d3f2g      109
N, O, F  11s8p7d4f2g      116
=======  ===============  ===========

Spherical functions in PySCF order are used throughout.
"""

from __future__ import annotations

import functools

import numpy as np
from pyscf import df, gto

from mofdft_jax.molecules.molecule import InputError, Molecule
from mofdft_jax.units import ELEMENT_SYMBOLS, SUPPORTED_ELEMENTS

#: Orbital basis of the paper's KS-DFT labels (spec §1.1).
PAPER_BASIS = "6-31G(2df,p)"
#: Even-tempered progression factor of the density basis (spec §1.4).
ETB_BETA = 2.5
#: Density-basis functions per element for the paper settings (spec Table S2).
ETB_FUNCTION_COUNTS = {1: 20, 6: 109, 7: 116, 8: 116, 9: 116}


#: Examples named when a basis name is not known to PySCF.
BASIS_EXAMPLES = ("sto-3g", "6-31G", PAPER_BASIS, "def2-svp", "cc-pvdz")


def check_basis(name: str) -> str:
    """``name`` if PySCF has that orbital basis for every supported element (H, C, N, O, F);
    else an :class:`InputError` naming examples of valid names (or the elements it lacks)."""
    import warnings

    from pyscf.gto.basis import BasisNotFoundError

    missing = []
    for z in SUPPORTED_ELEMENTS:
        symbol = ELEMENT_SYMBOLS[int(z)]
        try:
            with warnings.catch_warnings():  # PySCF's "try basis-set-exchange" hint
                warnings.simplefilter("ignore")
                shells = gto.basis.load(str(name), symbol)
        except (BasisNotFoundError, KeyError, ValueError, OSError):
            raise InputError(f"{name!r} is not an orbital basis PySCF knows (e.g. "
                             f"{', '.join(BASIS_EXAMPLES)})") from None
        if not shells:
            missing.append(symbol)
    if missing:
        raise InputError(f"basis {name!r} has no functions for {', '.join(missing)} (M-OFDFT "
                         "covers H, C, N, O, F)")
    return name


def make_mol(molecule: Molecule, basis: str = PAPER_BASIS, *, verbose: int = 0,
             max_memory_mb: int = 16000) -> gto.Mole:
    """Build a PySCF ``Mole`` (Bohr coordinates, spherical functions) from a :class:`Molecule`."""
    bad = [int(z) for z in molecule.numbers if int(z) not in SUPPORTED_ELEMENTS]
    if bad:
        raise InputError(f"{molecule.name}: element Z={bad[0]} is not supported "
                         "(M-OFDFT covers H, C, N, O, F)")
    mol = gto.Mole()
    mol.atom = [(ELEMENT_SYMBOLS[int(z)], tuple(map(float, xyz)))
                for z, xyz in zip(molecule.numbers, molecule.coords_bohr)]
    mol.unit = "Bohr"
    mol.basis = basis
    mol.charge = int(molecule.charge)
    mol.spin = int(molecule.spin)
    mol.cart = False
    mol.verbose = verbose
    mol.max_memory = max_memory_mb
    mol.build()
    return mol


@functools.lru_cache(maxsize=8)
def _etb_basis(orbital_basis: str, beta: float) -> tuple[tuple[str, tuple], ...]:
    ref = gto.M(atom="H 0 0 0; C 0 0 2; N 0 0 4; O 0 0 6; F 0 0 8", basis=orbital_basis, spin=1,
                verbose=0)
    etb = df.aug_etb(ref, beta=beta)
    # freeze into hashable nested tuples so the cache is safe from mutation
    return tuple(sorted((sym, _freeze(shells)) for sym, shells in etb.items()))


def _freeze(obj):
    if isinstance(obj, list):
        return tuple(_freeze(x) for x in obj)
    return obj


def _thaw(obj):
    if isinstance(obj, tuple):
        return [_thaw(x) for x in obj]
    return obj


def make_auxbasis(orbital_basis: str = PAPER_BASIS, beta: float = ETB_BETA) -> dict[str, list]:
    """Even-tempered density basis per element symbol, from the H/C/N/O/F reference molecule.

    Returns a PySCF basis dict ``{"H": [[l, [exp, 1.0]], ...], "C": ...}``.
    """
    return {sym: _thaw(shells) for sym, shells in _etb_basis(orbital_basis, float(beta))}


def make_auxmol(mol: gto.Mole, auxbasis: dict | None = None) -> gto.Mole:
    """PySCF ``Mole`` carrying the density basis on the atoms of ``mol`` (spherical, PySCF order)."""
    if auxbasis is None:
        auxbasis = make_auxbasis()
    auxmol = df.make_auxmol(mol, auxbasis)
    auxmol.cart = False
    auxmol.build()
    return auxmol


def aux_function_atoms(auxmol: gto.Mole) -> np.ndarray:
    """``(naux,)`` index of the atom that carries each density-basis function."""
    out = np.empty(auxmol.nao_nr(), dtype=np.int64)
    for atom, (_, _, p0, p1) in enumerate(auxmol.aoslice_by_atom()):
        out[p0:p1] = atom
    return out


def aux_function_l(auxmol: gto.Mole) -> np.ndarray:
    """``(naux,)`` angular momentum l of each density-basis function."""
    ls = [np.full(2 * auxmol.bas_angular(b) + 1, auxmol.bas_angular(b)) for b in range(auxmol.nbas)]
    # contracted shells with several contractions repeat the block; ETB shells are uncontracted
    return np.concatenate([np.repeat(l_block[None], auxmol.bas_nctr(b), axis=0).ravel()
                           for b, l_block in enumerate(ls)])

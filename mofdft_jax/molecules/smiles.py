"""Molecules from SMILES with RDKit, and the RDKit/MMFF bridge used by the samplers.

Geometry recipe (environment_notes §2; the paper's small molecules come from QM9/MD17, ours from
SMILES): ``AddHs`` -> ETKDGv3 embedding with a fixed ``randomSeed`` -> MMFF94 optimisation. The
same seed gives the same coordinates bit for bit.
"""

from __future__ import annotations

import numpy as np

from mofdft_jax.molecules.molecule import InputError, Molecule
from mofdft_jax.molecules.validate import validate_molecule
from mofdft_jax.units import ANGSTROM_TO_BOHR, BOHR_TO_ANGSTROM


def molecule_from_rdkit(rdmol, *, name: str, conf_id: int = -1) -> Molecule:
    """Molecule from an RDKit molecule with a conformer: Z, coordinates (Angstrom -> Bohr), total
    formal charge and number of radical electrons as 2S."""
    conf = rdmol.GetConformer(conf_id)
    coords = np.array(conf.GetPositions(), dtype=np.float64)
    numbers = np.array([a.GetAtomicNum() for a in rdmol.GetAtoms()], dtype=np.int64)
    charge = sum(a.GetFormalCharge() for a in rdmol.GetAtoms())
    spin = sum(a.GetNumRadicalElectrons() for a in rdmol.GetAtoms())
    return Molecule(numbers, coords * ANGSTROM_TO_BOHR, charge=int(charge), spin=int(spin),
                    name=name)


def embed_rdkit(rdmol, *, seed: int, optimize: bool = True, max_iters: int = 2000,
                source: str = "molecule"):
    """Embed ``rdmol`` (hydrogens added) in 3D in place: ETKDGv3 with ``randomSeed=seed``, falling
    back to random starting coordinates, then MMFF94 (UFF when MMFF lacks parameters)."""
    from rdkit.Chem import AllChem

    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(rdmol, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(rdmol, params) != 0:
            raise InputError(f"{source}: RDKit could not embed a 3D conformer (ETKDGv3, seed "
                             f"{seed})")
    if optimize:
        if AllChem.MMFFHasAllMoleculeParams(rdmol):
            AllChem.MMFFOptimizeMolecule(rdmol, maxIters=max_iters)
        else:
            AllChem.UFFOptimizeMolecule(rdmol, maxIters=max_iters)
    return rdmol


def molecule_from_smiles(smiles: str, *, seed: int = 0, name: str | None = None,
                         optimize: bool = True, validate: bool = True, allow_charged: bool = False,
                         allow_open_shell: bool = False, source: str | None = None) -> Molecule:
    """One 3D conformer of a SMILES string: RDKit AddHs, ETKDGv3 (``randomSeed=seed``), MMFF94.

    Charge and spin come from the SMILES (formal charges, radical electrons), so ``[NH4+]`` or
    ``[CH3]`` are refused by validation unless the matching ``allow_*`` flag is set.

    Args:
      smiles: the SMILES string.
      seed: ETKDG random seed; the same seed gives identical coordinates.
      name: molecule name (default: the SMILES).
      optimize: MMFF94-optimise the embedded geometry.
      validate: run :func:`validate_molecule`.
      source: where the SMILES came from, for messages (default ``SMILES '<smiles>'``).
    """
    from rdkit import Chem, RDLogger

    where = source or f"SMILES '{smiles}'"
    RDLogger.DisableLog("rdApp.*")
    try:
        rdmol = Chem.MolFromSmiles(smiles) if smiles else None
    finally:
        RDLogger.EnableLog("rdApp.*")
    if rdmol is None:
        raise InputError(f"{where}: RDKit cannot parse this SMILES")
    rdmol = Chem.AddHs(rdmol)
    pre = molecule_from_rdkit_graph(rdmol, name=name or smiles)
    if validate:  # refuse bad elements/charge/spin before the embedding work
        validate_molecule(pre, allow_charged=allow_charged, allow_open_shell=allow_open_shell,
                          source=where)
    embed_rdkit(rdmol, seed=seed, optimize=optimize, source=where)
    mol = molecule_from_rdkit(rdmol, name=name or smiles)
    if validate:
        validate_molecule(mol, allow_charged=allow_charged, allow_open_shell=allow_open_shell,
                          source=where)
    return mol


def molecule_from_rdkit_graph(rdmol, *, name: str) -> Molecule:
    """Molecule with the composition, charge and spin of ``rdmol`` and well-separated placeholder
    coordinates (for validating elements/charge/spin before embedding)."""
    n = rdmol.GetNumAtoms()
    numbers = np.array([a.GetAtomicNum() for a in rdmol.GetAtoms()], dtype=np.int64)
    charge = sum(a.GetFormalCharge() for a in rdmol.GetAtoms())
    spin = sum(a.GetNumRadicalElectrons() for a in rdmol.GetAtoms())
    coords = np.zeros((n, 3))
    coords[:, 0] = 10.0 * np.arange(n)
    return Molecule(numbers, coords, charge=int(charge), spin=int(spin), name=name)


def rdkit_from_molecule(mol: Molecule):
    """An RDKit molecule (bonds and bond orders perceived from the geometry, RDKit's xyz2mol port
    ``rdDetermineBonds``, with ``mol.charge``) carrying ``mol``'s coordinates as conformer 0."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds
    from rdkit.Geometry import Point3D

    rw = Chem.RWMol()
    for z in mol.numbers:
        rw.AddAtom(Chem.Atom(int(z)))
    conf = Chem.Conformer(mol.natm)
    for i, (x, y, z) in enumerate(mol.coords_bohr * BOHR_TO_ANGSTROM):
        conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
    rw.AddConformer(conf, assignId=True)
    rdmol = rw.GetMol()
    try:
        rdDetermineBonds.DetermineBonds(rdmol, charge=int(mol.charge))
    except Exception as err:  # noqa: BLE001 - RDKit raises ValueError/RuntimeError variants
        raise InputError(f"{mol.name}: could not perceive bonds from the geometry ({err})")\
            from None
    return rdmol


def mmff_setup(rdmol):
    """MMFF94 force field object for ``rdmol`` (conformer 0); InputError if MMFF lacks types."""
    from rdkit.Chem import AllChem

    props = AllChem.MMFFGetMoleculeProperties(rdmol)
    if props is None:
        raise InputError("MMFF94 has no parameters for this molecule")
    return AllChem.MMFFGetMoleculeForceField(rdmol, props, ignoreInterfragInteractions=False)


def optimize_mmff(mol: Molecule, *, max_iters: int = 5000, grad_tol: float = 1e-8) -> Molecule:
    """``mol`` relaxed to the nearest MMFF94 minimum (RDKit BFGS to a tight gradient tolerance).

    Returns a new Molecule named like the input; reference energy/forces are dropped.
    """
    rdmol = rdkit_from_molecule(mol)
    ff = mmff_setup(rdmol)
    ff.Initialize()
    for _ in range(20):
        if ff.Minimize(maxIts=max_iters, forceTol=grad_tol, energyTol=1e-12) == 0:
            break
    coords = np.array(ff.Positions(), dtype=np.float64).reshape(-1, 3)
    return mol.with_coords(coords * ANGSTROM_TO_BOHR)

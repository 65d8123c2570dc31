"""Non-equilibrium geometries: thermal normal-mode sampling and rigid PES scans.

The paper trains and tests on MD17's thermal ethanol structures (spec §1.2). Without running
ab-initio MD we draw structures from the classical harmonic Boltzmann distribution around an MMFF94
minimum, in *internal* coordinates:

.. math::

    p(\\Delta q) \\propto
    \\exp\\left(-\\tfrac{1}{2}\\,\\Delta q^{\\mathsf T} H_q\\, \\Delta q / k_B T\\right),
    \\qquad H_q = J^{\\mathsf T} H_x J, \\quad J = \\partial x / \\partial q,

where ``q`` are the 3N-6 Z-matrix coordinates (bond lengths, angles, dihedrals), ``H_x`` the
Cartesian MMFF Hessian (central differences of analytic MMFF gradients) and ``J`` the Jacobian of
the Z-matrix -> Cartesian map (NeRF). Diagonalising ``H_q`` gives the normal modes in these
coordinates; every mode gets a classical Boltzmann amplitude ``sqrt(k_B T / lambda_i)``. The
harmonic energy then has the equipartition mean ``(3N-6) k_B T / 2``. Sampling in internal rather
than Cartesian normal coordinates keeps torsional motion curvilinear: a methyl or hydroxyl rotor at
500 K swings by tens of degrees, which a linear Cartesian displacement would turn into 5-10 % bond
stretches.

The scans (:func:`torsion_scan`, :func:`bond_scan`) are rigid: one side of a bond is rotated about
or translated along it, everything else stays at the input geometry (for the PES experiment:
ethanol's H-C-C-O torsion in 15 degree steps, the O-H bond in 0.015 Angstrom steps, around the MMFF
minimum from :func:`~mofdft_jax.molecules.smiles.optimize_mmff`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mofdft_jax.molecules.geometry import (
    bond_angle,
    bond_pairs,
    dihedral,
    kabsch_align,
    moving_side,
    neighbour_lists,
    place_atom,
    rotate_about_axis,
)
from mofdft_jax.molecules.molecule import InputError, Molecule
from mofdft_jax.molecules.validate import MIN_DISTANCE_ANGSTROM, element_symbol, validate_molecule
from mofdft_jax.units import ANGSTROM_TO_BOHR

#: Boltzmann constant in kcal/mol/K (CODATA 2018: 1.380649e-23 J/K * N_A / 4184 J/kcal).
BOLTZMANN_KCAL_PER_MOL_K = 1.380649e-23 * 6.02214076e23 / 4184.0

#: Angles closer to 180 degrees than this make a Z-matrix dihedral ill-defined.
_LINEAR_TOL_DEG = 8.0


# ------------------------------------------------------------------------------- Z-matrix


@dataclasses.dataclass(frozen=True)
class ZMatrix:
    """A Z-matrix over a bond graph: the build order and the three reference atoms of each atom.

    Attributes:
      order: ``(natm,)`` atom indices in build order.
      refs: ``(natm, 3)`` for each atom in ``order``: (bond, angle, dihedral) reference atoms,
        ``-1`` where undefined (first three atoms).
    """

    order: np.ndarray
    refs: np.ndarray

    @property
    def n_internal(self) -> int:
        """Number of internal coordinates, 3N-6 (N >= 3), 1 for N = 2."""
        n = len(self.order)
        return max(0, n - 1) + max(0, n - 2) + max(0, n - 3)

    def to_internal(self, coords: np.ndarray) -> np.ndarray:
        """Internal coordinates ``(n_internal,)``: all bond lengths, then angles, then dihedrals
        (radians), following ``order``."""
        bonds, angles, dihedrals = [], [], []
        for m, i in enumerate(self.order):
            b, a, d = self.refs[m]
            if m >= 1:
                bonds.append(np.linalg.norm(coords[i] - coords[b]))
            if m >= 2:
                angles.append(bond_angle(coords[i], coords[b], coords[a]))
            if m >= 3:
                dihedrals.append(dihedral(coords[d], coords[a], coords[b], coords[i]))
        return np.array(bonds + angles + dihedrals, dtype=np.float64)

    def to_cartesian(self, q: np.ndarray) -> np.ndarray:
        """Cartesian coordinates ``(..., natm, 3)`` from internal ones ``(..., n_internal)`` (NeRF,
        batched over leading axes), in a fixed frame: the first atom at the origin, the second on
        +x, the third in the xy-plane."""
        q = np.asarray(q, dtype=np.float64)
        n = len(self.order)
        nb, na = max(0, n - 1), max(0, n - 2)
        bonds, angles, dihedrals = q[..., :nb], q[..., nb:nb + na], q[..., nb + na:]
        x = np.zeros(q.shape[:-1] + (n, 3))
        for m, i in enumerate(self.order):
            b, a, d = self.refs[m]
            if m == 1:
                x[..., i, 0] = bonds[..., 0]
            elif m == 2:
                u = x[..., a, :] - x[..., b, :]
                u = u / np.linalg.norm(u, axis=-1, keepdims=True)
                perp = np.stack([-u[..., 1], u[..., 0], np.zeros_like(u[..., 0])], axis=-1)
                x[..., i, :] = x[..., b, :] + bonds[..., 1, None] * (
                    np.cos(angles[..., 0, None]) * u + np.sin(angles[..., 0, None]) * perp)
            elif m >= 3:
                x[..., i, :] = place_atom(x[..., d, :], x[..., a, :], x[..., b, :],
                                          bonds[..., m - 1], angles[..., m - 2],
                                          dihedrals[..., m - 3])
        return x


def build_zmatrix(numbers: np.ndarray, coords_angstrom: np.ndarray,
                  pairs: np.ndarray | None = None) -> ZMatrix:
    """Z-matrix following the bond graph (breadth-first from the most connected heavy atom, heavy
    atoms first), with angle/dihedral references chosen among bonded atoms and away from linear
    angles (> 172 degrees).

    Raises:
      InputError: the bond graph is disconnected, or no non-linear references exist (linear
        molecules such as acetylene need Cartesian sampling, not provided).
    """
    numbers = np.asarray(numbers)
    n = len(numbers)
    if pairs is None:
        pairs = bond_pairs(numbers, coords_angstrom)
    nbrs = neighbour_lists(n, pairs)
    heavy = numbers > 1
    root = max(range(n), key=lambda i: (heavy[i], len(nbrs[i]), -i))
    order, parent = [root], {root: -1}
    for i in order:  # breadth-first; the list grows while iterating
        for j in sorted(nbrs[i], key=lambda j: (not heavy[j], j)):
            if j not in parent:
                parent[j] = i
                order.append(j)
    if len(order) != n:
        missing = sorted(set(range(n)) - set(order))[0]
        raise InputError(f"atom {missing} ({element_symbol(numbers[missing])}) is not bonded to "
                         "the rest of the molecule; internal-coordinate sampling needs one "
                         "connected molecule")
    position = {a: m for m, a in enumerate(order)}
    x = np.asarray(coords_angstrom, dtype=np.float64)

    def linear(a, b, c) -> bool:
        return np.degrees(bond_angle(x[a], x[b], x[c])) > 180.0 - _LINEAR_TOL_DEG

    refs = -np.ones((n, 3), dtype=np.int64)
    for m, i in enumerate(order):
        if m == 0:
            continue
        b = parent[i]
        refs[m, 0] = b
        if m == 1:
            continue
        placed = [j for j in order[:m] if j != b]
        # angle reference: b's parent, else other placed neighbours of b, else any placed atom
        cands_a = ([parent[b]] if parent[b] >= 0 else []) + [j for j in nbrs[b] if j in placed]
        cands_a += placed
        a = next((c for c in dict.fromkeys(cands_a) if c in placed and not linear(i, b, c)), None)
        if a is None:
            raise InputError(f"atom {i} ({element_symbol(numbers[i])}): no non-linear angle "
                             "reference (linear molecule?)")
        refs[m, 1] = a
        if m == 2:
            continue
        rest = [j for j in placed if j != a]
        cands_d = ([parent[a]] if parent[a] >= 0 else []) + [j for j in nbrs[a] if j in rest]
        cands_d += [j for j in nbrs[b] if j in rest] + rest
        d = next((c for c in dict.fromkeys(cands_d) if c in rest and not linear(b, a, c)), None)
        if d is None:
            raise InputError(f"atom {i} ({element_symbol(numbers[i])}): no non-linear dihedral "
                             "reference (linear molecule?)")
        refs[m, 2] = d
    assert all(position[r] < position[o] for o, row in zip(order, refs, strict=True) for r in row
               if r >= 0)
    return ZMatrix(np.array(order, dtype=np.int64), refs)


# ------------------------------------------------------------------------------- MMFF Hessian


def mmff_energy_and_gradient_fn(mol: Molecule):
    """``f(coords_angstrom (natm, 3)) -> (energy kcal/mol, gradient kcal/mol/Angstrom (natm, 3))``
    for MMFF94 with the bond graph perceived from ``mol``'s geometry."""
    from mofdft_jax.molecules.smiles import mmff_setup, rdkit_from_molecule

    ff = mmff_setup(rdkit_from_molecule(mol))
    ff.Initialize()

    def energy_and_gradient(coords_angstrom):
        pos = np.asarray(coords_angstrom, dtype=np.float64).reshape(-1).tolist()
        return ff.CalcEnergy(pos), np.array(ff.CalcGrad(pos)).reshape(-1, 3)

    return energy_and_gradient


def cartesian_hessian(gradient_fn, coords: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """Hessian ``(3N, 3N)`` by central differences of an analytic gradient, symmetrised.

    .. math:: H_{:,k} = [g(x + h e_k) - g(x - h e_k)] / 2h
    """
    x0 = np.asarray(coords, dtype=np.float64).reshape(-1)
    h = np.empty((x0.size, x0.size))
    for k in range(x0.size):
        xp, xm = x0.copy(), x0.copy()
        xp[k] += step
        xm[k] -= step
        h[:, k] = (gradient_fn(xp.reshape(-1, 3)).reshape(-1)
                   - gradient_fn(xm.reshape(-1, 3)).reshape(-1)) / (2 * step)
    return 0.5 * (h + h.T)


@dataclasses.dataclass(frozen=True)
class InternalModes:
    """Harmonic model of a minimum in Z-matrix coordinates.

    Attributes:
      reference: the minimum (Molecule, coordinates Bohr).
      zmatrix: the Z-matrix.
      q0: ``(nq,)`` internal coordinates of the minimum (Angstrom, radians).
      hessian_q: ``(nq, nq)`` Hessian in internal coordinates, kcal/mol per (Angstrom or radian)^2.
      eigenvalues: ``(nq,)`` eigenvalues of ``hessian_q`` (all > 0 at a minimum).
      eigenvectors: ``(nq, nq)`` columns are the modes.
      energy_kcal: MMFF energy at the minimum.
    """

    reference: Molecule
    zmatrix: ZMatrix
    q0: np.ndarray
    hessian_q: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    energy_kcal: float


def internal_modes(mol: Molecule, *, optimize: bool = True) -> InternalModes:
    """Harmonic model of the MMFF94 minimum nearest ``mol`` in internal coordinates (module doc).

    Cost: 6N MMFF gradients plus 2(3N-6) NeRF rebuilds (ethanol: ~0.05 s).
    """
    from mofdft_jax.molecules.smiles import optimize_mmff

    minimum = optimize_mmff(mol) if optimize else mol
    x_min = minimum.coords_angstrom
    zmat = build_zmatrix(minimum.numbers, x_min)
    q0 = zmat.to_internal(x_min)
    x0 = zmat.to_cartesian(q0)  # the minimum in the Z-matrix frame
    eg_fn = mmff_energy_and_gradient_fn(minimum)
    energy0, _ = eg_fn(x0)
    h_x = cartesian_hessian(lambda x: eg_fn(x)[1], x0)
    nq = len(q0)
    jac = np.empty((x0.size, nq))
    step = 1e-5
    for k in range(nq):
        qp, qm = q0.copy(), q0.copy()
        qp[k] += step
        qm[k] -= step
        jac[:, k] = (zmat.to_cartesian(qp) - zmat.to_cartesian(qm)).reshape(-1) / (2 * step)
    h_q = jac.T @ h_x @ jac
    h_q = 0.5 * (h_q + h_q.T)
    evals, evecs = np.linalg.eigh(h_q)
    if evals[0] <= 0:
        raise InputError(f"{mol.name}: the MMFF geometry is not a minimum (lowest internal Hessian "
                         f"eigenvalue {evals[0]:.3g} kcal/mol); cannot sample around it")
    return InternalModes(minimum.with_coords(x0 * ANGSTROM_TO_BOHR), zmat, q0, h_q, evals, evecs,
                         float(energy0))


def sample_thermal_conformers(mol: Molecule, n: int, *, temperature_k: float = 300.0,
                              seed: int = 0, optimize: bool = True,
                              modes: InternalModes | None = None,
                              max_tries_per_sample: int = 50) -> list[Molecule]:
    """``n`` structures from the classical harmonic Boltzmann distribution around the MMFF minimum.

    Internal normal-mode sampling (module docstring): ``Delta q = V diag(sqrt(k_B T / lambda)) xi``
    with ``xi ~ N(0, 1)`` from ``numpy.random.default_rng(seed)`` (all draws at once, vectorised);
    Cartesian coordinates by NeRF, then Kabsch-aligned (mass-weighted) onto the minimum. A draw with
    two atoms closer than 0.5 A is redrawn (rare: none in 4000 ethanol draws at 300-500 K).

    Args:
      mol: starting geometry (optimised to the nearest MMFF94 minimum when ``optimize``).
      n: number of structures.
      temperature_k: temperature in Kelvin (MD17 ethanol: 500 K).
      seed: random seed; the same seed gives identical structures.
      modes: a precomputed :func:`internal_modes` (skips the Hessian).

    Returns:
      ``n`` Molecules named ``<name>-T<temperature>-<i>``, same elements, charge, spin.
    """
    from ase.data import atomic_masses

    if temperature_k < 0:
        raise InputError(f"temperature must be >= 0 K, got {temperature_k}")
    modes = modes if modes is not None else internal_modes(mol, optimize=optimize)
    ref = modes.reference
    x_ref = ref.coords_angstrom
    masses = atomic_masses[ref.numbers]
    kt = BOLTZMANN_KCAL_PER_MOL_K * temperature_k
    amplitude = np.sqrt(kt / modes.eigenvalues)
    rng = np.random.default_rng(seed)
    iu, ju = np.triu_indices(ref.natm, k=1)

    def draw(count: int) -> np.ndarray:
        xi = rng.standard_normal((count, len(amplitude)))
        return modes.zmatrix.to_cartesian(modes.q0 + (xi * amplitude) @ modes.eigenvectors.T)

    def too_close(x: np.ndarray) -> np.ndarray:
        if len(iu) == 0:
            return np.zeros(len(x), dtype=bool)
        d2 = ((x[:, iu] - x[:, ju]) ** 2).sum(axis=-1)
        return ~(d2 >= MIN_DISTANCE_ANGSTROM**2).all(axis=1)

    x = draw(n)
    for _ in range(max_tries_per_sample):
        bad = np.flatnonzero(too_close(x))
        if len(bad) == 0:
            break
        x[bad] = draw(len(bad))
    else:
        raise InputError(f"{mol.name}: {max_tries_per_sample} thermal draws in a row had atoms "
                         f"closer than {MIN_DISTANCE_ANGSTROM} A at {temperature_k} K")
    x = kabsch_align(x, x_ref, masses)
    return [dataclasses.replace(ref, coords_bohr=x[i] * ANGSTROM_TO_BOHR,
                                name=f"{mol.name}-T{temperature_k:g}-{i}") for i in range(n)]


# ------------------------------------------------------------------------------- rigid scans


def find_chain(mol: Molecule, pattern: str) -> tuple[int, ...]:
    """First bonded chain of atoms matching element symbols, e.g. ``'H-C-C-O'`` in ethanol gives
    (methyl H, methyl C, methylene C, O); lowest indices first. InputError if none matches."""
    symbols = [s.strip() for s in pattern.split("-")]
    pairs = bond_pairs(mol.numbers, mol.coords_angstrom)
    nbrs = neighbour_lists(mol.natm, pairs)
    sym = [element_symbol(z) for z in mol.numbers]

    def extend(chain):
        if len(chain) == len(symbols):
            return chain
        for j in nbrs[chain[-1]]:
            if j not in chain and sym[j] == symbols[len(chain)]:
                found = extend(chain + [j])
                if found:
                    return found
        return None

    for i in range(mol.natm):
        if sym[i] == symbols[0]:
            found = extend([i])
            if found:
                return tuple(found)
    raise InputError(f"{mol.name}: no bonded chain {pattern}")


def torsion_scan(mol: Molecule, torsion: tuple[int, int, int, int], *, step_deg: float = 15.0,
                 angles_deg: np.ndarray | None = None, validate: bool = True) -> list[Molecule]:
    """Rigid scan of the dihedral i-j-k-l: the atoms on ``k``'s side of the j-k bond rotate about
    it, everything else is fixed (bond lengths and angles unchanged).

    Args:
      mol: the geometry to scan around (typically an MMFF minimum).
      torsion: atom indices (i, j, k, l).
      step_deg: step of the default grid ``phi0 + step * m`` over one full turn (24 points for 15).
      angles_deg: explicit absolute dihedral values instead of the default grid.

    Returns:
      One Molecule per angle, named ``<name>-tors<angle>``; the first has the input geometry when
      the default grid is used.
    """
    i, j, k, l_ = torsion
    x = mol.coords_angstrom
    nbrs = neighbour_lists(mol.natm, bond_pairs(mol.numbers, x))
    if k not in nbrs[j]:
        raise InputError(f"{mol.name}: atoms {j} and {k} of torsion {torsion} are not bonded")
    try:
        side = moving_side(nbrs, j, k)
    except ValueError as err:
        raise InputError(f"{mol.name}: {err}") from None
    phi0 = np.degrees(dihedral(x[i], x[j], x[k], x[l_]))
    if angles_deg is None:
        angles_deg = phi0 + step_deg * np.arange(int(round(360.0 / step_deg)))
    # orientation of the rotation that increases the dihedral (tested, not assumed)
    probe = rotate_about_axis(x[side], x[k], x[k] - x[j], 1e-3)
    y = x.copy()
    y[side] = probe
    change = dihedral(y[i], y[j], y[k], y[l_]) - np.radians(phi0)
    sign = 1.0 if (change + np.pi) % (2 * np.pi) - np.pi > 0 else -1.0
    out = []
    for target in np.asarray(angles_deg, dtype=np.float64):
        y = x.copy()
        y[side] = rotate_about_axis(x[side], x[k], x[k] - x[j], sign * np.radians(target - phi0))
        new = mol.with_coords(y * ANGSTROM_TO_BOHR, name=f"{mol.name}-tors{target:.1f}")
        out.append(validate_molecule(new, allow_charged=True, allow_open_shell=True)
                   if validate else new)
    return out


def bond_scan(mol: Molecule, bond: tuple[int, int], *, displacements_angstrom=None,
              validate: bool = True) -> list[Molecule]:
    """Rigid stretch of the bond i-j: the atoms on ``j``'s side move along the bond by each
    displacement (Angstrom), the rest is fixed.

    Default displacements: -0.15 ... +0.30 A in 0.015 A steps (31 points, the equilibrium included).
    Names: ``<name>-bond<+0.015>``.
    """
    i, j = bond
    x = mol.coords_angstrom
    nbrs = neighbour_lists(mol.natm, bond_pairs(mol.numbers, x))
    if j not in nbrs[i]:
        raise InputError(f"{mol.name}: atoms {i} and {j} are not bonded")
    try:
        side = moving_side(nbrs, i, j)
    except ValueError as err:
        raise InputError(f"{mol.name}: {err}") from None
    if displacements_angstrom is None:
        displacements_angstrom = 0.015 * np.arange(-10, 21)
    u = (x[j] - x[i]) / np.linalg.norm(x[j] - x[i])
    out = []
    for dr in np.asarray(displacements_angstrom, dtype=np.float64):
        y = x.copy()
        y[side] += dr * u
        new = mol.with_coords(y * ANGSTROM_TO_BOHR, name=f"{mol.name}-bond{dr:+.3f}")
        out.append(validate_molecule(new, allow_charged=True, allow_open_shell=True)
                   if validate else new)
    return out


def bond_length_deviations(reference: Molecule, structures: list[Molecule]) -> np.ndarray:
    """Relative bond-length changes ``(nstruct, nbond)`` ``(r - r_ref) / r_ref`` over the bonds of
    ``reference`` (covalent-radius graph): the realism check of thermal samples."""
    pairs = bond_pairs(reference.numbers, reference.coords_angstrom)
    r0 = np.linalg.norm(reference.coords_bohr[pairs[:, 0]] - reference.coords_bohr[pairs[:, 1]],
                        axis=1)
    xs = np.stack([s.coords_bohr for s in structures])
    r = np.linalg.norm(xs[:, pairs[:, 0]] - xs[:, pairs[:, 1]], axis=-1)
    return (r - r0) / r0


__all__ = [
    "BOLTZMANN_KCAL_PER_MOL_K",
    "InternalModes",
    "ZMatrix",
    "bond_length_deviations",
    "bond_scan",
    "build_zmatrix",
    "cartesian_hessian",
    "find_chain",
    "internal_modes",
    "mmff_energy_and_gradient_fn",
    "sample_thermal_conformers",
    "torsion_scan",
]

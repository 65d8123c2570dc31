"""Restricted KS-DFT that records every SCF step and the DIIS weights (spec §1.1, §1.3, §1.7).

PySCF's SCF loop (``pyscf.scf.hf.kernel``, 2.14) runs, for cycle c = 0, 1, ...::

    F̃⁽ᶜ⁺¹⁾ = get_fock(h, S, V[D⁽ᶜ⁾], D⁽ᶜ⁾, c, diis)   # DIIS-extrapolated when c ≥ diis_start_cycle
    C⁽ᶜ⁺¹⁾ = eig(F̃⁽ᶜ⁺¹⁾, S);  D⁽ᶜ⁺¹⁾ = 2 C_occ C_occᵀ
    F⁽ᶜ⁺¹⁾ = h + V[D⁽ᶜ⁺¹⁾]

with D⁽⁰⁾ the initial guess (MINAO). So step k's orbitals are the exact ground state of the
non-interacting problem in F̃⁽ᵏ⁾ = Σ_j π⁽ᵏ⁾_j F⁽ʲ⁾, a combination of the *un-extrapolated* Fock
matrices of earlier steps j < k with the CDIIS weights π⁽ᵏ⁾ (which sum to one and may be negative).
For k = 1 (no DIIS yet, ``diis_start_cycle = 1``) π⁽¹⁾ = [1] on step 0. After convergence PySCF
diagonalises F⁽ᴷ⁾ once more without DIIS (``conv_check``); that extra step is recorded too, with
π = [1] on step K.

Recording (environment_notes §7): the CDIIS ring buffer stores Fock matrices in ``space`` slots that
are reused cyclically, so the weights ``c[1:]`` of ``DIIS.extrapolate`` refer to *slots*. A CDIIS
subclass notes which SCF step each slot holds when a Fock is pushed and re-solves the same bordered
system ``h c = g`` for the weights; the SCF loop's ``callback`` hands over D⁽ᵏ⁾, V[D⁽ᵏ⁾] and the
Fock actually diagonalised. ``tests/qchem/test_ksdft.py`` checks Σ_i c_i F⁽ˢᵗᵉᵖ⁽ⁱ⁾⁾ against that
Fock to 1e-10.

Perturbed runs (``perturbation=``, :mod:`mofdft_jax.qchem.perturbation`): the Fock matrix that
step k diagonalises gets a random one-body potential V^pert⁽ᵏ⁾ added after the DIIS extrapolation,
so F̃⁽ᵏ⁾ = Σ_j π⁽ᵏ⁾_j F⁽ʲ⁾ + V^pert⁽ᵏ⁾ (``fock_diag``), while F⁽ᵏ⁾ = h + V[D⁽ᵏ⁾] (``focks``, what
DIIS stores) stays unperturbed; the SCF may not stop while the perturbation window is open.

Energies of every step are built from explicit terms, never by summing ``scf_summary``:
E = tr(D T) + tr(D V_nuc) + E_H[D] + E_XC[D] + E_nn, with E_H = ½ tr(D J[D]) and E_XC from the
same grid as the SCF (PySCF's ``vhf.ecoul`` and ``vhf.exc`` tags).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import numpy as np
import scipy.linalg
from pyscf import dft, gto

from mofdft_jax.molecules.molecule import InputError, Molecule
from mofdft_jax.qchem.basis import make_mol
from mofdft_jax.qchem.settings import ENERGY_KEYS, PAPER_SETTINGS, LabelSettings


def to_numpy(x) -> np.ndarray:
    """Host NumPy copy of a NumPy or CuPy array (gpu4pyscf returns CuPy arrays)."""
    if hasattr(x, "get") and not isinstance(x, np.ndarray):
        return np.asarray(x.get())
    return np.asarray(x)


def _like(ref, x: np.ndarray):
    """``x`` as an array of ``ref``'s kind (NumPy, or CuPy under gpu4pyscf)."""
    if isinstance(ref, np.ndarray):
        return x
    import cupy

    return cupy.asarray(x)


def solve_diis_weights(h: np.ndarray, nd: int) -> np.ndarray:
    """CDIIS weights c_1..c_nd of the bordered system exactly as ``pyscf.lib.diis.extrapolate``.

    ``h`` is the ``(space+1, space+1)`` bordered error-overlap matrix (``DIIS._H``); the system is
    h[:nd+1, :nd+1] c = (1, 0, ..., 0), c[0] the Lagrange multiplier.
    """
    h = np.asarray(h[:nd + 1, :nd + 1])
    g = np.zeros(nd + 1, h.dtype)
    g[0] = 1
    w, v = scipy.linalg.eigh(h)
    if np.any(abs(w) < 1e-14):
        idx = abs(w) > 1e-14
        c = np.dot(v[:, idx] * (1.0 / w[idx]), np.dot(v[:, idx].T.conj(), g))
    else:
        c = np.linalg.solve(h, g)
    return np.asarray(c[1:])


_RECORDING_CLASSES: dict[type, type] = {}


def make_recording_diis_class(base: type) -> type:
    """A subclass of the SCF's DIIS class that records weights and which step each slot holds.

    Attributes of an instance after the SCF:
      step: SCF step whose Fock the next ``update`` pushes (set by the ``get_fock`` hook).
      slot_steps: ``{slot: step}`` of the ring buffer right now.
      records: ``{step k: (weights (nd,), steps (nd,))}`` of every extrapolation, keyed by the
        step k
        whose orbitals come from diagonalising the extrapolated Fock (k = pushed step + 1).
    """
    if base in _RECORDING_CLASSES:
        return _RECORDING_CLASSES[base]

    class RecordingDIIS(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.step = None
            self.slot_steps: dict[int, int] = {}
            self.records: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def push_vec(self, x):
            # lib.diis.DIIS.push_vec stores x in slot self._head (push_err_vec already wrapped it)
            head = self._head if self._head < self.space else 0
            self.slot_steps[head] = self.step
            return super().push_vec(x)

        def extrapolate(self, nd=None):
            if nd is None:
                nd = self.get_num_vec()
            weights = solve_diis_weights(to_numpy(self._H), nd)
            steps = np.array([self.slot_steps[i] for i in range(nd)], dtype=np.int64)
            self.records[int(self.step) + 1] = (weights, steps)
            return super().extrapolate(nd)

    RecordingDIIS.__name__ = f"Recording{base.__name__}"
    _RECORDING_CLASSES[base] = RecordingDIIS
    return RecordingDIIS


@dataclasses.dataclass
class KSRun:
    """A recorded restricted KS-DFT run. Step 0 is the initial guess; steps 1..K are SCF steps.

    Attributes:
      molecule: the input molecule.
      settings: the :class:`LabelSettings` used.
      mol: PySCF orbital-basis ``Mole``.
      mf: the PySCF (or gpu4pyscf) KS object after the run.
      dms: ``(K+1, nao, nao)`` density matrices D⁽ᵏ⁾ (D⁽⁰⁾ the initial guess).
      focks: ``(K+1, nao, nao)`` un-extrapolated F⁽ᵏ⁾ = h + V_eff[D⁽ᵏ⁾].
      fock_diag: ``(K+1, nao, nao)`` Fock diagonalised to produce D⁽ᵏ⁾ (entry 0 is zero: the
        initial guess is not an eigen-solution).
      mo_energy: ``(K+1, nao)`` orbital energies of step k (entry 0 NaN).
      diis_weights: list of K+1 arrays, π⁽ᵏ⁾ (entry 0 empty); F̃⁽ᵏ⁾ = Σ_i π⁽ᵏ⁾_i F⁽ˢ⁽ⁱ⁾⁾.
      diis_steps: list of K+1 int arrays, the steps s(i) that the weights multiply.
      energies: ``{e_tot, kinetic, hartree, xc, external, e_nuc}`` → ``(K+1,)`` from explicit terms.
      pyscf_e_tot: ``(K+1,)`` PySCF's own total energy of each step (for checks).
      kinetic_matrix: ``(nao, nao)`` T_αβ; nuclear_matrix: ``(nao, nao)`` V_nuc,αβ.
      converged: SCF converged; n_cycles: PySCF cycles (without the extra diagonalisation);
      wall_s: wall time of the SCF.
      perturbation: ``(K+1, naux)`` density-basis coefficients u⁽ᵏ⁾ of the potential added to the
        Fock matrix diagonalised at step k (zeros: not perturbed), or ``None`` for a plain run.
      perturbation_std: ``(K+1,)`` σ_k of those draws (zeros where not perturbed), or ``None``.
    """

    molecule: Molecule
    settings: LabelSettings
    mol: gto.Mole
    mf: object
    dms: np.ndarray
    focks: np.ndarray
    fock_diag: np.ndarray
    mo_energy: np.ndarray
    diis_weights: list
    diis_steps: list
    energies: dict
    pyscf_e_tot: np.ndarray
    kinetic_matrix: np.ndarray
    nuclear_matrix: np.ndarray
    converged: bool
    n_cycles: int
    wall_s: float
    perturbation: Optional[np.ndarray] = None
    perturbation_std: Optional[np.ndarray] = None

    @property
    def n_steps(self) -> int:
        """K, the number of SCF steps after the initial guess (labelled steps)."""
        return int(self.dms.shape[0] - 1)

    @property
    def dm(self) -> np.ndarray:
        """``(nao, nao)`` converged (last) density matrix."""
        return self.dms[-1]

    def final_energies(self) -> dict:
        """Energy components of the last step as floats."""
        return {k: float(v[-1]) for k, v in self.energies.items()}


def make_ks(mol: gto.Mole, settings: LabelSettings = PAPER_SETTINGS):
    """The PySCF restricted KS object for ``settings`` (no recording; the benchmark baseline)."""
    if mol.spin != 0:
        raise InputError(f"{mol.atom[0][0] if mol.atom else 'molecule'}: open-shell molecules "
                         "(spin != 0) are not supported by the restricted KS labels")
    mf = dft.RKS(mol)
    mf.xc = settings.xc
    mf.grids.level = settings.grid_level
    mf.conv_tol = settings.conv_tol
    mf.max_cycle = settings.max_cycle
    mf.init_guess = settings.init_guess
    mf.diis_space = settings.diis_space
    mf.max_memory = settings.max_memory_mb
    if settings.uses_density_fit(mol.natm):
        mf = mf.density_fit(auxbasis=settings.df_auxbasis)
    if settings.use_gpu:
        mf = mf.to_gpu()
    return mf


def _energy_terms(dm, vhf, kin, vnuc, e_nuc) -> dict:
    kinetic = float(np.einsum("ij,ji->", dm, kin))
    external = float(np.einsum("ij,ji->", dm, vnuc))
    hartree = float(to_numpy(vhf.ecoul))
    xc = float(to_numpy(vhf.exc))
    return {"e_tot": kinetic + external + hartree + xc + e_nuc, "kinetic": kinetic,
            "hartree": hartree, "xc": xc, "external": external, "e_nuc": e_nuc}


def run_ks(molecule: Molecule, settings: LabelSettings = PAPER_SETTINGS, *,
           mol: Optional[gto.Mole] = None, verbose: int = 0,
           on_step: Optional[Callable[[int, float, float], None]] = None,
           perturbation=None) -> KSRun:
    """Run restricted KS-DFT with ``settings`` and record every SCF step (spec §1.1, §1.3).

    Args:
      molecule: closed-shell molecule.
      settings: KS settings (paper defaults).
      mol: an already built orbital-basis ``Mole`` (else built from ``molecule``).
      verbose: PySCF verbosity.
      on_step: called as ``on_step(k, e_tot, delta_e)`` after every SCF step (progress bars).
      perturbation: a :class:`~mofdft_jax.qchem.perturbation.FockPerturbation` (built on ``mol``)
        whose potential is added to the Fock matrix of the steps in its window; ``None``: a plain
        SCF. The run's ``perturbation`` / ``perturbation_std`` record the draws.
    """
    t0 = time.perf_counter()
    if mol is None:
        mol = make_mol(molecule, settings.basis, verbose=verbose,
                       max_memory_mb=settings.max_memory_mb)
    if molecule.spin != 0 or mol.nelectron % 2:
        raise InputError(f"{molecule.name}: open-shell molecules (odd electron count or spin != 0) "
                         "are not supported by the restricted KS labels")
    mf = make_ks(mol, settings)
    mf.verbose = verbose
    mf.chkfile = None  # every step is recorded in memory; no per-cycle HDF5 checkpoint
    if abs(getattr(mf, "level_shift", 0)) > 1e-12 or abs(getattr(mf, "damp", 0)) > 1e-12:
        raise ValueError("level shift and damping must be 0: the gradient labels assume the "
                         "diagonalised Fock is the DIIS combination of earlier Fock matrices")
    mf.DIIS = make_recording_diis_class(type(mf).DIIS)

    kin = mol.intor_symmetric("int1e_kin")
    vnuc = mol.intor_symmetric("int1e_nuc")
    e_nuc = float(mol.energy_nuc())
    rec = {"dms": [], "focks": [], "fock_diag": [], "mo_energy": [], "energies": [],
           "pyscf_e_tot": [], "dm_obj": None, "diis": None, "h1e": None}

    orig_get_fock = mf.get_fock

    def get_fock(h1e=None, s1e=None, vhf=None, dm=None, cycle=-1, diis=None, *args, **kwargs):
        if diis is not None and hasattr(diis, "slot_steps"):
            diis.step = cycle
            rec["diis"] = diis
        fock = orig_get_fock(h1e, s1e, vhf, dm, cycle, diis, *args, **kwargs)
        if perturbation is not None and cycle >= 0:
            # cycle c diagonalises the Fock that produces step k = c + 1
            v_pert = perturbation.matrix(cycle + 1)
            if v_pert is not None:
                fock = fock + _like(fock, v_pert)
        return fock

    def check_convergence(envs):
        # PySCF's own criterion (scf.hf.kernel), refused while perturbed steps are still to come
        if perturbation.window_open(envs["cycle"] + 1):
            return False
        return bool(abs(envs["e_tot"] - envs["last_hf_e"]) < envs["conv_tol"]
                    and envs["norm_gorb"] < envs["conv_tol_grad"])

    def add_step(dm, vhf, fock, fock_diag, mo_energy, e_tot):
        dm = to_numpy(dm)
        rec["dms"].append(dm)
        rec["focks"].append(to_numpy(fock))
        rec["fock_diag"].append(None if fock_diag is None else to_numpy(fock_diag))
        rec["mo_energy"].append(None if mo_energy is None else to_numpy(mo_energy))
        rec["energies"].append(_energy_terms(dm, vhf, kin, vnuc, e_nuc))
        rec["pyscf_e_tot"].append(float(to_numpy(e_tot)))

    orig_pre_kernel = mf.pre_kernel
    orig_post_kernel = mf.post_kernel

    def pre_kernel(envs):
        h1e, vhf = envs["h1e"], envs["vhf"]
        rec["h1e"] = h1e
        add_step(envs["dm"], vhf, h1e + vhf, None, None, envs["e_tot"])
        rec["dm_obj"] = envs["dm"]
        return orig_pre_kernel(envs)

    def callback(envs):
        add_step(envs["dm"], envs["vhf"], envs["fock"], envs["fock_last"], envs["mo_energy"],
                 envs["e_tot"])
        rec["dm_obj"] = envs["dm"]
        if on_step is not None:
            k = len(rec["dms"]) - 1
            on_step(k, rec["energies"][-1]["e_tot"],
                    rec["energies"][-1]["e_tot"] - rec["energies"][-2]["e_tot"])

    def post_kernel(envs):
        if envs["dm"] is not rec["dm_obj"]:
            # conv_check: one more diagonalisation of F[D^(K)] without DIIS
            add_step(envs["dm"], envs["vhf"], envs["fock"], rec["focks"][-1], envs["mo_energy"],
                     envs["e_tot"])
            if on_step is not None:
                k = len(rec["dms"]) - 1
                on_step(k, rec["energies"][-1]["e_tot"],
                        rec["energies"][-1]["e_tot"] - rec["energies"][-2]["e_tot"])
        return orig_post_kernel(envs)

    mf.get_fock = get_fock
    mf.pre_kernel = pre_kernel
    mf.post_kernel = post_kernel
    mf.callback = callback
    if perturbation is not None and perturbation.is_constant:
        h_pert = perturbation.constant_matrix()
        orig_get_hcore = mf.get_hcore

        def get_hcore(*args, **kwargs):
            h = orig_get_hcore(*args, **kwargs)
            return h + _like(h, h_pert)

        mf.get_hcore = get_hcore
    elif perturbation is not None:
        if getattr(mf, "check_convergence", None) is not None:
            raise ValueError("a perturbed SCF needs PySCF's default convergence check")
        mf.check_convergence = check_convergence
    mf.kernel()

    nsteps = len(rec["dms"])
    records = rec["diis"].records if rec["diis"] is not None else {}
    diis_weights, diis_steps = [np.zeros(0)], [np.zeros(0, dtype=np.int64)]
    for k in range(1, nsteps):
        if k in records:
            weights, steps = records[k]
        else:  # no extrapolation: the Fock of the previous step, unmixed
            weights, steps = np.ones(1), np.array([k - 1], dtype=np.int64)
        diis_weights.append(weights)
        diis_steps.append(steps)

    nao = mol.nao_nr()
    fock_diag = np.zeros((nsteps, nao, nao))
    mo_energy = np.full((nsteps, nao), np.nan)
    for k in range(1, nsteps):
        fock_diag[k] = rec["fock_diag"][k]
        mo_energy[k] = rec["mo_energy"][k]
    energies = {key: np.array([e[key] for e in rec["energies"]]) for key in ENERGY_KEYS}
    pert, pert_std = (perturbation.per_step(nsteps - 1) if perturbation is not None
                      else (None, None))
    return KSRun(
        molecule=molecule, settings=settings, mol=mol, mf=mf,
        dms=np.stack(rec["dms"]), focks=np.stack(rec["focks"]), fock_diag=fock_diag,
        mo_energy=mo_energy, diis_weights=diis_weights, diis_steps=diis_steps, energies=energies,
        pyscf_e_tot=np.array(rec["pyscf_e_tot"]), kinetic_matrix=kin, nuclear_matrix=vnuc,
        converged=bool(mf.converged), n_cycles=int(getattr(mf, "cycles", nsteps - 1)),
        wall_s=time.perf_counter() - t0, perturbation=pert, perturbation_std=pert_std,
    )


def ks_observables(run: KSRun, *, with_forces: bool = True) -> dict:
    """What a PySCF user expects of a converged KS reference, beside its energies.

    * ``dipole_au``: ``(3,)`` electric dipole μ = Σ_a Z_a R_a − Σ_αβ Γ_αβ ⟨α|r|β⟩ (e·Bohr, origin
      at (0, 0, 0); PySCF ``dip_moment``, whose sign convention this is: μ points from the
      negative to the positive charge);
    * ``mo_energy_ha``: ``(nao,)`` orbital energies ε_i of the final Fock matrix; ``homo_ha``,
      ``lumo_ha`` (``None`` when there is no virtual orbital) and ``gap_ha`` = ε_LUMO − ε_HOMO;
    * ``forces_ha_per_bohr``: ``(natm, 3)`` analytic KS forces −∂E/∂R (PySCF nuclear gradients,
      Pulay terms included; no grid response, so their sum is zero only to ~1e-5 Ha/Bohr), when
      ``with_forces``.
    """
    mf = run.mf
    mo_energy = to_numpy(mf.mo_energy).astype(np.float64)
    mo_occ = to_numpy(mf.mo_occ)
    occupied = np.flatnonzero(mo_occ > 0)
    virtual = np.flatnonzero(mo_occ == 0)
    homo = float(mo_energy[occupied].max())
    lumo = float(mo_energy[virtual].min()) if virtual.size else None
    dipole = to_numpy(mf.dip_moment(run.mol, to_numpy(run.dm), unit="AU", verbose=0))
    out = {
        "dipole_au": np.asarray(dipole, dtype=np.float64),
        "mo_energy_ha": mo_energy,
        "homo_ha": homo,
        "lumo_ha": lumo,
        "gap_ha": None if lumo is None else lumo - homo,
    }
    if with_forces:
        from mofdft_jax.qchem.forces import ks_forces

        out["forces_ha_per_bohr"] = ks_forces(mf)
    return out


__all__ = ["KSRun", "ks_observables", "make_ks", "make_recording_diis_class", "run_ks",
           "solve_diis_weights", "to_numpy"]
